"""Audio of any length: enhancement in overlapping chunks, tensors and files.

:class:`LongAudioMixin` gives
:class:`speechbrain_elbo.inference.DiffusionEnhancement` its methods for
long audio: :meth:`~LongAudioMixin.enhance_long` (a tensor) and
:meth:`~LongAudioMixin.enhance_file` (a file streamed from disk chunk by
chunk, written atomically). The whole signal is normalised by its own peak;
chunks on the STFT frame grid are enhanced in groups by the host's
``_enhance_normalized`` and joined by cross-fades
(:func:`speechbrain_elbo.chunking.process_in_chunks`), so memory is bounded
by one group.

What the mixin needs of its host: ``sample_rate``, ``transform``,
``min_samples``, ``device``, the chunk settings ``chunk_seconds``,
``overlap_seconds``, ``max_batch``, ``crossfade``, and the methods
``make_sampler``, ``_use_refiner``, ``_generator``, ``check_waveforms``,
``_resample`` and ``_enhance_normalized``.

Example
-------
>>> first_given(None, 2.0, 10.0)
2.0
"""

import pathlib
from collections.abc import Callable
from typing import NamedTuple

import torch

from speechbrain_elbo.audio_input import (
    EnhancementInputError,
    FileReader,
    check_audio_file,
    load_waveform,
    refuse_overwrite,
    to_mono,
)
from speechbrain_elbo.chunking import (
    TensorReader,
    chunk_layout,
    chunk_sizes,
    crossfade_windows,
    process_in_chunks,
)
from speechbrain_elbo.fileio import AtomicAudioWriter
from speechbrain_elbo.output_check import OutputStats
from speechbrain_elbo.sampling import Sampler

__all__ = ["LongAudioMixin", "first_given"]


def first_given(*values):
    """The first of ``values`` that is not None (None if all are)."""
    for value in values:
        if value is not None:
            return value
    return None


class _ChunkPlan(NamedTuple):
    """Checked settings of a chunked enhancement call."""

    sampler: Sampler
    refine: bool
    seed: int | None
    generator: torch.Generator | None
    chunk: int
    overlap: int
    max_batch: int
    crossfade: str
    progress: bool | Callable[[float], object]
    check_output: bool


class LongAudioMixin:
    """Chunked enhancement of long tensors and files (see the module).

    Attributes
    ----------
    last_num_chunks : int or None
        Chunks the last long-audio call was cut into.
    """

    last_num_chunks = None

    def chunk_sizes(self, chunk_seconds=None, overlap_seconds=None):
        """Chunk and overlap lengths in samples, in whole STFT hops.

        :func:`speechbrain_elbo.chunking.chunk_sizes` for this model: both
        are rounded to multiples of the STFT hop so that every chunk starts
        on the frame grid of the whole signal, and the overlap is at most
        half a chunk.

        Example
        -------
        >>> from types import SimpleNamespace
        >>> host = SimpleNamespace(chunk_seconds=10.0, overlap_seconds=1.0,
        ...     sample_rate=16000, transform=SimpleNamespace(hop_length=128),
        ...     min_samples=510)
        >>> LongAudioMixin.chunk_sizes(host, 1.0, 0.25)
        (16000, 3968)
        >>> LongAudioMixin.chunk_sizes(host)
        (160000, 16000)
        """
        return chunk_sizes(
            first_given(chunk_seconds, self.chunk_seconds),
            first_given(overlap_seconds, self.overlap_seconds),
            self.sample_rate,
            int(self.transform.hop_length),
            self.min_samples,
        )

    def _chunk_plan(
        self,
        chunk_seconds=None,
        overlap_seconds=None,
        max_batch=None,
        crossfade=None,
        progress=False,
        check_output=False,
        **sampling,
    ):
        """The checked settings of a chunked call, before any audio is read.

        ``sampling`` holds the sampling settings of :meth:`enhance_batch`;
        an unknown setting is a ``TypeError`` that names it.
        """
        seed = sampling.pop("seed", None)
        generator = sampling.pop("generator", None)
        refine = self._use_refiner(sampling.pop("use_refiner", None))
        sampler = self.make_sampler(**sampling)
        chunk, overlap = self.chunk_sizes(chunk_seconds, overlap_seconds)
        max_batch = int(first_given(max_batch, self.max_batch))
        if max_batch < 1:
            raise ValueError(
                f"max_batch must be >= 1 (chunks enhanced together), got "
                f"{max_batch}."
            )
        crossfade = first_given(crossfade, self.crossfade)
        crossfade_windows(1, crossfade)  # validates the name
        if seed is not None and generator is not None:
            raise ValueError("Pass either seed or generator, not both.")
        return _ChunkPlan(
            sampler,
            refine,
            seed,
            generator,
            chunk,
            overlap,
            max_batch,
            crossfade,
            progress,
            bool(check_output),
        )

    def _enhance_stream(self, reader, scale, write, plan, name=None):
        """Chunked enhancement of ``reader``'s signal, emitted via ``write``.

        The signal is divided by ``scale`` (its peak) before enhancement
        and the output multiplied back; see
        :func:`speechbrain_elbo.chunking.process_in_chunks` for the chunks.
        Input and output energies and peaks are accumulated over the valid
        samples of every chunk; an output that departs grossly from the
        input is named in ``last_departures`` and logged, or, with
        ``plan.check_output``, raised as an ``EnhancementOutputError``
        before the caller's writer renames anything.
        """
        stats = OutputStats()

        def enhance(chunks, lengths, first):
            if plan.seed is not None:
                # each group has its own seed: reproducible, and group 0 of
                # a short signal is exactly enhance_batch with the same seed
                gen = self._generator(plan.seed + first * 1_000_003, None)
            else:
                gen = self._generator(None, plan.generator)
            wav = chunks.to(self.device, torch.float32) / scale
            enhanced = self._enhance_normalized(
                wav, lengths.to(self.device), plan.sampler, plan.refine, gen
            )
            for index, length in enumerate(lengths.tolist()):
                valid = max(1, int(length * wav.shape[-1]))
                stats.add(wav[index, :valid], enhanced[index, :valid])
            return enhanced.to("cpu") * scale

        if callable(plan.progress):
            emit, rate = write, self.sample_rate

            def write(piece):
                emit(piece)
                plan.progress(piece.shape[0] / rate)

        count = chunk_layout(reader.num_samples, plan.chunk, plan.overlap)[0]
        self.last_num_chunks = count
        result = process_in_chunks(
            reader,
            enhance,
            write,
            plan.chunk,
            plan.overlap,
            plan.max_batch,
            plan.crossfade,
            self.min_samples,
            plan.progress is True,
        )
        reason = stats.reason(plan.sampler)
        self._report_departures(
            [reason], [name or "the waveform"], plan.check_output
        )
        return result

    def _enhance_to(
        self,
        reader,
        scale,
        plan,
        output_filename=None,
        subtype=None,
        keep=True,
        name=None,
    ):
        """Enhance in chunks; write the output atomically if asked.

        Returns the enhanced waveform, or ``None`` when ``keep`` is false
        (then only the file is written and memory stays bounded).
        """
        pieces = []
        with torch.inference_mode():
            if output_filename is None:
                self._enhance_stream(reader, scale, pieces.append, plan, name)
            else:
                with AtomicAudioWriter(
                    output_filename, self.sample_rate, subtype
                ) as writer:

                    def write(piece):
                        writer.write(piece)
                        if keep:
                            pieces.append(piece)

                    self._enhance_stream(reader, scale, write, plan, name)
        return torch.cat(pieces) if keep else None

    def _tensor_reader(self, waveform, sample_rate):
        """A reader over a mono waveform at the model's rate, and its peak.

        The waveform is resampled when ``sample_rate`` differs from the
        model's, then checked.
        """
        with torch.inference_mode():
            wav = waveform.detach().to("cpu", torch.float32)
            wav = self._resample(wav, sample_rate, "enhance_long")
            wav = self.check_waveforms(wav[None])[0][0]
            return TensorReader(wav), float(wav.abs().max())

    def enhance_long(
        self, waveform, sample_rate=None, mix_down=False, **options
    ):
        """Enhance one waveform of any length in overlapping chunks.

        The whole signal is normalised by its own peak (not chunk by chunk,
        which would make the level jump between chunks); chunks of
        ``chunk_seconds`` overlapping by ``overlap_seconds`` are enhanced in
        groups of ``max_batch`` and joined with cross-fades. A signal no
        longer than one chunk is enhanced in one piece, exactly as
        :meth:`enhance_batch` would with the same seed.

        Arguments
        ---------
        waveform : torch.Tensor
            Shape (L,), or (C, L) channels first with ``mix_down=True``.
        sample_rate : int, optional
            Sample rate of ``waveform``; another rate than the model's is
            resampled (logged). The output is at the model's rate.
        mix_down : bool
            Average several channels to mono instead of refusing them.
        **options
            Chunking settings ``chunk_seconds``, ``overlap_seconds``,
            ``max_batch``, ``crossfade`` (default those of the interface)
            and ``progress`` (``True``: a progress bar over chunk groups;
            a callable: called with the seconds of output, at the model's
            rate, each time a piece of the output is ready); the
            sampling settings of :meth:`enhance_batch` (``sampler``,
            ``steps``, ``corrector_steps``, ``snr``, ``use_refiner``,
            ``seed``, ``generator``). With a seed, chunk group k uses seed
            ``seed + 1000003 k``. ``check_output`` (default False): raise an
            :class:`~speechbrain_elbo.output_check.EnhancementOutputError`
            when the output departs grossly from the input (it is logged
            and named in ``last_departures`` either way).

        Returns
        -------
        torch.Tensor
            Enhanced waveform (L',) at the model's sample rate, on the
            waveform's device, at the input's level (not scaled into full
            scale).
        """
        plan = self._chunk_plan(**options)
        waveform = to_mono(waveform, mix_down)
        reader, scale = self._tensor_reader(waveform, sample_rate)
        return self._enhance_to(reader, scale, plan).to(waveform.device)

    def enhance_file(
        self,
        filename,
        output_filename=None,
        mix_down=False,
        subtype=None,
        **options,
    ):
        """Enhance an audio file; long files are streamed in chunks.

        As SpeechBrain's ``SpectralMaskEnhancement.enhance_file``: the
        enhanced waveform is returned, and also written to
        ``output_filename`` when one is given. At the model's sample rate
        the file is read twice, block by block (once for its peak, once
        chunk by chunk), and the output file is written as it is produced;
        only the returned waveform grows with the file's length (4 bytes a
        sample). A file at another sample rate is loaded whole and
        resampled (logged).

        Arguments
        ---------
        filename : str or pathlib.Path
            Input audio file (anything soundfile reads: WAV, FLAC, OGG...).
        output_filename : str or pathlib.Path, optional
            Where to also write the enhanced audio (atomically: temporary
            file, then rename); it may not be the input file.
        mix_down : bool
            Average several channels to mono instead of refusing them.
        subtype : str, optional
            soundfile subtype of the output (default 32-bit float WAV).
            Whatever the subtype, the file is within full scale: an output
            whose peak exceeds 1.0 is scaled down as a whole (logged), see
            :class:`speechbrain_elbo.fileio.AtomicAudioWriter`.
        **options
            Chunking and sampling settings, as in :meth:`enhance_long`
            (including ``progress``). ``check_output`` defaults to True
            when an output file is given: an output that departs grossly
            from the input raises an
            :class:`~speechbrain_elbo.output_check.EnhancementOutputError`
            naming the settings to change, and nothing is written (without
            a file, as :meth:`enhance_long`, it is logged).

        Returns
        -------
        torch.Tensor
            The enhanced waveform (L,) at the model's sample rate on the
            CPU, not scaled into full scale (as :meth:`enhance_batch`).
        """
        options.setdefault("check_output", output_filename is not None)
        return self._enhance_file(
            filename, output_filename, mix_down, subtype, True, **options
        )

    def _enhance_file(
        self, filename, output_filename, mix_down, subtype, keep, **options
    ):
        """:meth:`enhance_file`; returns ``None`` unless ``keep``."""
        path = pathlib.Path(filename)
        info = check_audio_file(path, mix_down)
        if output_filename is not None:
            output_filename = pathlib.Path(output_filename)
            refuse_overwrite(path, output_filename)
        plan = self._chunk_plan(**options)
        if info.sample_rate != self.sample_rate:
            waveform = self.load_waveform(path, mix_down)
            reader, scale = self._tensor_reader(waveform, info.sample_rate)
            return self._enhance_to(
                reader, scale, plan, output_filename, subtype, keep, str(path)
            )
        reader = FileReader(path, mix_down)
        try:
            if reader.num_samples < self.min_samples:
                raise EnhancementInputError(
                    f"{path} has {reader.num_samples} samples, fewer than "
                    f"the {self.min_samples} the model needs: too short to "
                    "enhance."
                )
            scale = reader.peak()
            if scale == 0.0:
                raise EnhancementInputError(
                    f"{path} is all zeros: there is nothing to enhance."
                )
            return self._enhance_to(
                reader, scale, plan, output_filename, subtype, keep, str(path)
            )
        finally:
            reader.close()

    def load_waveform(self, path, mix_down=False):
        """A file as a mono float32 tensor (L,) at its own rate.

        See :func:`speechbrain_elbo.audio_input.load_waveform`.
        """
        return load_waveform(path, mix_down)
