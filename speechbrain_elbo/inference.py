"""Pretrained diffusion enhancer: load an exported folder, enhance audio.

:class:`DiffusionEnhancement` is a SpeechBrain ``Pretrained`` interface over
a folder written by :func:`speechbrain_elbo.export.export_enhancer` (stage 1
alone, or both stages). It enhances

- batches of waveforms (:meth:`DiffusionEnhancement.enhance_batch`),
- one long waveform in overlapping chunks joined by cross-fades, with
  memory bounded by the chunk size (:meth:`DiffusionEnhancement.enhance_long`),
- audio files, streamed from disk chunk by chunk and written atomically
  (:meth:`DiffusionEnhancement.enhance_file`).

The pipeline is that of METHOD.md: peak normalisation by the noisy peak,
compressed complex STFT, frame padding to the backbone's multiple, reverse
diffusion (predictor-corrector or probability-flow ODE), optional
refinement, cropping, inverse STFT and de-normalisation. Sampler, number of
steps, corrector, refiner and seed can be chosen per call; the same seed
gives the same output on the same device.

The interface delegates the jobs around it: the overlapping-chunk split and
cross-fade join to :mod:`speechbrain_elbo.chunking`, input checks and
loading to :mod:`speechbrain_elbo.audio_input`, atomic writing to
:mod:`speechbrain_elbo.audio_output`. The public names of those modules
that this one has always exported are still importable from here.

Example
-------
>>> from speechbrain_elbo.export import export_enhancer
>>> from speechbrain_elbo.lobes.ncsnpp import NCSNpp
>>> from speechbrain_elbo.sampling import Sampler
>>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
>>> from speechbrain_elbo.spectral import SpectralTransform
>>> config = dict(nf=4, ch_mult=[1, 2, 2, 2], num_res_blocks=1,
...               attn_resolutions=[])
>>> net = NCSNpp(**config)
>>> net.config = config
>>> folder = export_enhancer(getfixture("tmp_path") / "model", net,
...     OUVESDE(GeometricGNS()), SpectralTransform(), Sampler("pc", 30))
>>> enhancer = DiffusionEnhancement.from_hparams(source=folder,
...     run_opts={"device": "cpu"})
>>> noisy = torch.randn(2, 4000)
>>> enhanced = enhancer.enhance_batch(noisy, steps=2, seed=0)
>>> enhanced.shape, enhancer.last_nfe
(torch.Size([2, 4000]), 4)
"""

import logging
import math
import pathlib
from typing import NamedTuple

import torch
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import FetchConfig, LocalStrategy

from speechbrain_elbo.audio_input import (
    EnhancementInputError,
    FileReader,
    audio_info,
    check_waveforms,
    load_waveform,
    to_mono,
)
from speechbrain_elbo.audio_output import (
    AtomicAudioWriter,
    refuse_overwrite,
    write_audio_atomic,
)
from speechbrain_elbo.chunking import (
    TensorReader,
    chunk_layout,
    chunk_windows,
    crossfade_windows,
    overlap_add,
    process_in_chunks,
)
from speechbrain_elbo.export import (
    HPARAMS_FILE,
    ModelFolderError,
    file_sha256,
)
from speechbrain_elbo.sampling import SAMPLERS, Sampler
from speechbrain_elbo.score import ScoreModel
from speechbrain_elbo.spectral import (
    crop_frames,
    pad_frames,
    peak_normalize,
)

__all__ = [
    "DiffusionEnhancement",
    "EnhancementInputError",
    "crossfade_windows",
    "chunk_windows",
    "overlap_add",
    "chunk_layout",
    "write_audio_atomic",
    "SAMPLER_ALIASES",
]

logger = logging.getLogger(__name__)

#: Extra sampler names accepted per call: "ode" is the 2nd-order ODE solver.
SAMPLER_ALIASES = {"ode": "heun"}


class DiffusionEnhancement(Pretrained):
    """Score-based (diffusion) speech enhancement from an exported folder.

    Load it with :meth:`from_hparams` from a folder written by
    :func:`speechbrain_elbo.export.export_enhancer`. The folder's
    ``hyperparams.yaml`` defines ``sde``, ``transform``, ``sampler`` (the
    default sampling settings), ``sample_rate`` and the modules
    ``score_model`` (the backbone) and optionally ``refiner``.

    Arguments
    ---------
    *args, **kwargs
        Forwarded to ``speechbrain.inference.interfaces.Pretrained``
        (``modules``, ``hparams``, ``run_opts``, ``freeze_params``).
    chunk_seconds : float
        Audio longer than this is enhanced in overlapping chunks of this
        length by :meth:`enhance_long` and :meth:`enhance_file` (default
        10 s, or ``chunk_seconds`` from the hyperparameters).
    overlap_seconds : float
        Overlap of consecutive chunks, cross-faded (default 1 s).
    max_batch : int
        Chunks enhanced together in one batch (default 1: the least
        memory; raise it on a GPU).
    crossfade : str
        Shape of the cross-fade, see :func:`crossfade_windows`.

    Attributes
    ----------
    last_nfe : int or None
        Score-network evaluations per utterance of the last call.
    last_refined : bool or None
        Whether the last call applied the refiner.
    last_num_chunks : int or None
        Chunks the last long-audio call was cut into.
    score_model : speechbrain_elbo.score.ScoreModel
        The backbone turned into the score of the SDE.
    """

    HPARAMS_NEEDED = ["sde", "transform", "sampler", "sample_rate"]
    MODULES_NEEDED = ["score_model"]

    def __init__(
        self,
        *args,
        chunk_seconds=None,
        overlap_seconds=None,
        max_batch=None,
        crossfade=None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        for name in self.MODULES_NEEDED:
            if name not in self.mods:
                raise ModelFolderError(
                    f"The hyperparameters define no module {name!r}: the "
                    "folder was not written by export_enhancer."
                )
        hp = vars(self.hparams)
        self.sde = self.hparams.sde
        self.transform = self.hparams.transform
        self.sample_rate = int(self.hparams.sample_rate)
        self.default_sampler = self.hparams.sampler
        self.score_model = ScoreModel(self.mods.score_model, self.sde).eval()
        self.refiner = self.mods["refiner"] if "refiner" in self.mods else None
        self.chunk_seconds = float(
            _first(chunk_seconds, hp.get("chunk_seconds"), 10.0)
        )
        self.overlap_seconds = float(
            _first(overlap_seconds, hp.get("overlap_seconds"), 1.0)
        )
        self.max_batch = int(_first(max_batch, hp.get("max_batch"), 1))
        self.crossfade = _first(crossfade, hp.get("crossfade"), "raised_cosine")
        self._check_chunking(self.chunk_seconds, self.overlap_seconds)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}.")
        crossfade_windows(1, self.crossfade)  # validates the name
        self.last_nfe = None
        self.last_refined = None
        self.last_num_chunks = None

    # -- loading ----------------------------------------------------------
    @classmethod
    def from_hparams(
        cls,
        source,
        hparams_file=HPARAMS_FILE,
        savedir=None,
        overrides=None,
        local_strategy=LocalStrategy.SYMLINK,
        verify_checksums=True,
        **kwargs,
    ):
        """Load an exported folder, with no network access.

        Arguments
        ---------
        source : str or pathlib.Path
            A local folder written by
            :func:`speechbrain_elbo.export.export_enhancer`. (A hub model
            must be downloaded first, e.g. with
            ``huggingface_hub.snapshot_download``.)
        hparams_file : str
            Name of the hyperparameter file in the folder.
        savedir : str or pathlib.Path, optional
            Where SpeechBrain links (or copies, see ``local_strategy``) the
            files. Default None: the files are read where they are.
        overrides : dict, optional
            HyperPyYAML overrides, e.g. ``{"sampler": ...}``.
        local_strategy : speechbrain.utils.fetching.LocalStrategy
            How files are brought into ``savedir`` (symlink by default).
        verify_checksums : bool
            Check each checkpoint against the SHA-256 recorded at export.
        **kwargs
            Forwarded to the constructor: ``run_opts={"device": ...}``,
            ``chunk_seconds``, ``overlap_seconds``, ``max_batch``...

        Returns
        -------
        DiffusionEnhancement
        """
        from hyperpyyaml import load_hyperpyyaml

        folder = pathlib.Path(source).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Model folder {source} does not exist (or is not a folder). "
                "DiffusionEnhancement loads local folders written by "
                "speechbrain_elbo.export.export_enhancer; download hub "
                "models first."
            )
        folder = folder.absolute()
        hparams_path = folder / hparams_file
        if not hparams_path.is_file():
            raise FileNotFoundError(
                f"{hparams_path} is missing: {folder} is not an exported "
                "model folder (export it with export_enhancer)."
            )
        merged = {"pretrained_path": str(folder)}
        merged.update(overrides or {})
        try:
            with open(hparams_path, encoding="utf-8") as handle:
                hparams = load_hyperpyyaml(handle, merged)
        except Exception as error:
            raise ModelFolderError(
                f"{hparams_path} cannot be loaded ({type(error).__name__}: "
                f"{error}). The file is corrupt or was written by an "
                "incompatible version; export the model again."
            ) from error
        for key in ("pretrainer", "modules", *cls.HPARAMS_NEEDED):
            if key not in hparams:
                raise ModelFolderError(
                    f"{hparams_path} defines no {key!r}: it was not written "
                    "by export_enhancer."
                )
        pretrainer = hparams["pretrainer"]
        for name, path in pretrainer.paths.items():
            if not pretrainer.is_loadable(name):
                continue
            if not pathlib.Path(path).is_file():
                raise FileNotFoundError(
                    f"Checkpoint file {path} (module {name!r}) is missing "
                    f"from {folder}; copy the whole exported folder."
                )
        if verify_checksums:
            for filename, digest in (hparams.get("checksums") or {}).items():
                path = folder / filename
                if not path.is_file():
                    raise FileNotFoundError(
                        f"Checkpoint file {path} is missing from {folder}; "
                        "copy the whole exported folder."
                    )
                if file_sha256(path) != str(digest):
                    raise ModelFolderError(
                        f"Checkpoint file {path} is corrupt: its SHA-256 "
                        f"does not match the one recorded in {hparams_file}. "
                        "Copy or export the model again."
                    )
        hparams["savedir"] = savedir
        if savedir is not None:
            pathlib.Path(savedir).mkdir(parents=True, exist_ok=True)
        # Re-link on every load (a reused savedir must not serve stale
        # files); nothing is fetched from the network.
        fetch_config = FetchConfig(overwrite=True, allow_network=False)
        pretrainer.set_collect_in(savedir)
        pretrainer.collect_files(
            default_source=str(folder),
            local_strategy=local_strategy,
            fetch_config=fetch_config,
        )
        if savedir is not None:
            from speechbrain.utils.fetching import fetch

            fetch(
                hparams_file,
                source=str(folder),
                savedir=savedir,
                local_strategy=local_strategy,
                fetch_config=fetch_config,
            )
        pretrainer.load_collected()
        return cls(modules=hparams["modules"], hparams=hparams, **kwargs)

    # -- settings ---------------------------------------------------------
    @property
    def has_refiner(self):
        """Whether the model has a stage-2 refiner."""
        return self.refiner is not None

    def make_sampler(
        self, sampler=None, steps=None, corrector_steps=None, snr=None
    ):
        """The default sampler with the given settings changed.

        Arguments
        ---------
        sampler : str, optional
            ``"pc"``, ``"euler"``, ``"heun"`` or ``"ode"`` (= ``"heun"``).
        steps : int, optional
            Grid points N (>= 1).
        corrector_steps : int, optional
            Langevin steps per predictor step (``"pc"`` only).
        snr : float, optional
            Corrector step-size ratio (``"pc"`` only).

        Returns
        -------
        speechbrain_elbo.sampling.Sampler
        """
        default = self.default_sampler
        name = default.name if sampler is None else str(sampler).lower()
        name = SAMPLER_ALIASES.get(name, name)
        if name not in SAMPLERS:
            choices = sorted([*SAMPLERS, *SAMPLER_ALIASES])
            raise ValueError(
                f"Unknown sampler {sampler!r}; choose one of {choices}."
            )
        if name != "pc" and (corrector_steps or snr is not None):
            raise ValueError(
                "corrector_steps and snr apply to the 'pc' sampler only, "
                f"not to {name!r}."
            )
        steps = default.steps if steps is None else steps
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}.")
        corrector = (
            default.corrector_steps
            if corrector_steps is None
            else corrector_steps
        )
        if int(corrector) != corrector or corrector < 0:
            raise ValueError(
                f"corrector_steps must be an integer >= 0, got {corrector!r}."
            )
        snr = default.snr if snr is None else snr
        return Sampler(name, int(steps), int(corrector), float(snr))

    def _use_refiner(self, use_refiner):
        if use_refiner is None:
            return self.has_refiner
        if use_refiner and not self.has_refiner:
            raise ValueError(
                "use_refiner=True, but this model has no refiner (it was "
                "exported with stage 1 only)."
            )
        return bool(use_refiner)

    def _generator(self, seed, generator):
        if seed is not None and generator is not None:
            raise ValueError("Pass either seed or generator, not both.")
        if seed is not None:
            return torch.Generator(device=self.device).manual_seed(int(seed))
        if generator is not None:
            if (
                torch.device(generator.device).type
                != torch.device(self.device).type
            ):
                raise ValueError(
                    f"The generator is on {generator.device} but the model "
                    f"runs on {self.device}; create it on {self.device}."
                )
        return generator

    @staticmethod
    def _check_chunking(chunk_seconds, overlap_seconds):
        if chunk_seconds <= 0 or overlap_seconds < 0:
            raise ValueError(
                "chunk_seconds must be > 0 and overlap_seconds >= 0, got "
                f"{chunk_seconds} and {overlap_seconds}."
            )
        if 2 * overlap_seconds > chunk_seconds:
            raise ValueError(
                f"overlap_seconds ({overlap_seconds}) must be at most half "
                f"of chunk_seconds ({chunk_seconds})."
            )

    @property
    def min_samples(self):
        """Shortest input (in samples) the model accepts: one FFT window."""
        return int(self.transform.n_fft)

    # -- input checks -----------------------------------------------------
    def check_waveforms(self, noisy, lengths=None, names=None):
        """Check a batch for this model; raise a clear error if unusable.

        :func:`speechbrain_elbo.audio_input.check_waveforms` (same
        arguments, results and errors) with the model's :attr:`min_samples`
        and sample rate.
        """
        return check_waveforms(
            noisy, lengths, self.min_samples, self.sample_rate, names
        )

    def _resample(self, waveform, sample_rate, what):
        if sample_rate is None or int(sample_rate) == self.sample_rate:
            return waveform
        import torchaudio.functional as AF

        logger.info(
            "%s: resampling from %d Hz to the model's %d Hz.",
            what,
            int(sample_rate),
            self.sample_rate,
        )
        return AF.resample(waveform, int(sample_rate), self.sample_rate)

    # -- enhancement ------------------------------------------------------
    def _enhance_normalized(
        self, wav, lengths, sampler, use_refiner, generator
    ):
        """Enhance peak-normalised waveforms (B, L) already on the device."""
        num_samples = wav.shape[-1]
        y = self.transform.encode(wav, lengths)
        multiple = int(getattr(self.mods.score_model, "frame_multiple", 1))
        if use_refiner:
            refine_multiple = int(getattr(self.refiner, "frame_multiple", 1))
            multiple = math.lcm(multiple, refine_multiple)
        y, num_frames = pad_frames(y, multiple)
        with self.inference_ctx:
            x, nfe = sampler(self.score_model, self.sde, y, generator=generator)
            if use_refiner:
                x = self.refiner(x, y)
        x = crop_frames(x.to(torch.complex64), num_frames)
        self.last_nfe = nfe
        self.last_refined = use_refiner
        return self.transform.decode(x, num_samples, lengths)

    def enhance_batch(
        self,
        noisy,
        lengths=None,
        sampler=None,
        steps=None,
        corrector_steps=None,
        snr=None,
        use_refiner=None,
        seed=None,
        generator=None,
        return_nfe=False,
    ):
        """Enhance a batch of waveforms at the model's sample rate.

        Arguments
        ---------
        noisy : torch.Tensor
            Noisy waveforms (B, L) (or one waveform (L,)), float, on any
            device.
        lengths : torch.Tensor, optional
            Relative lengths (B,) of a padded batch (SpeechBrain
            convention); samples past each length are ignored and zero in
            the output.
        sampler : str, optional
            ``"pc"``, ``"euler"``, ``"heun"`` or ``"ode"``; default that of
            the model folder.
        steps, corrector_steps, snr : optional
            Sampler settings, default those of the model folder.
        use_refiner : bool, optional
            Apply the stage-2 refiner; default True when the model has one.
        seed : int, optional
            Seed of a fresh generator on the model's device: the same seed
            gives the same output on the same device.
        generator : torch.Generator, optional
            Alternative to ``seed``.
        return_nfe : bool
            Also return the number of score-network evaluations.

        Returns
        -------
        enhanced : torch.Tensor
            Like ``noisy`` (same shape and device), float32.
        nfe : int
            Only with ``return_nfe``.
        """
        plan = self.make_sampler(sampler, steps, corrector_steps, snr)
        refine = self._use_refiner(use_refiner)
        squeeze = torch.is_tensor(noisy) and noisy.dim() == 1
        noisy, lengths = self.check_waveforms(noisy, lengths)
        out_device = noisy.device
        with torch.inference_mode():
            wav = noisy.to(self.device, torch.float32)
            lengths = lengths.to(self.device)
            wav, _, scale = peak_normalize(wav, lengths=lengths)
            gen = self._generator(seed, generator)
            enhanced = self._enhance_normalized(wav, lengths, plan, refine, gen)
            enhanced = (enhanced * scale).to(out_device)
        if squeeze:
            enhanced = enhanced[0]
        return (enhanced, self.last_nfe) if return_nfe else enhanced

    def forward(self, noisy, lengths=None, **options):
        """Same as :meth:`enhance_batch`."""
        return self.enhance_batch(noisy, lengths, **options)

    def chunk_sizes(self, chunk_seconds=None, overlap_seconds=None):
        """Chunk and overlap lengths in samples, in whole STFT hops.

        Both are rounded to multiples of the STFT hop so that every chunk
        starts on the frame grid of the whole signal, and the overlap is at
        most half a chunk.

        Example
        -------
        >>> from speechbrain_elbo.sampling import Sampler
        >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
        >>> from speechbrain_elbo.spectral import SpectralTransform
        >>> enhancer = DiffusionEnhancement(
        ...     modules={"score_model": torch.nn.Identity()},
        ...     hparams={"sde": OUVESDE(GeometricGNS()),
        ...              "sampler": Sampler(), "sample_rate": 16000,
        ...              "transform": SpectralTransform()},
        ...     run_opts={"device": "cpu"})
        >>> enhancer.chunk_sizes(1.0, 0.25)
        (16000, 3968)
        """
        chunk_seconds = _first(chunk_seconds, self.chunk_seconds)
        overlap_seconds = _first(overlap_seconds, self.overlap_seconds)
        self._check_chunking(chunk_seconds, overlap_seconds)
        # Whole STFT hops: every chunk starts on the frame grid of the whole
        # signal, so a chunk's inner frames are the whole signal's frames.
        hop = int(self.transform.hop_length)
        chunk = hop * max(1, round(chunk_seconds * self.sample_rate / hop))
        overlap = hop * round(overlap_seconds * self.sample_rate / hop)
        overlap = min(overlap, chunk // (2 * hop) * hop)
        if chunk < self.min_samples:
            raise ValueError(
                f"chunk_seconds={chunk_seconds} is shorter than the model's "
                f"minimum input of {self.min_samples} samples."
            )
        return chunk, overlap

    def _chunk_plan(
        self,
        chunk_seconds,
        overlap_seconds,
        max_batch,
        crossfade,
        progress,
        sampler,
        steps,
        corrector_steps,
        snr,
        use_refiner,
        seed,
        generator,
    ):
        """The checked settings of a chunked call, before any audio is read."""
        sampler = self.make_sampler(sampler, steps, corrector_steps, snr)
        refine = self._use_refiner(use_refiner)
        chunk, overlap = self.chunk_sizes(chunk_seconds, overlap_seconds)
        max_batch = int(_first(max_batch, self.max_batch))
        if max_batch < 1:
            raise ValueError(
                f"max_batch must be >= 1 (chunks enhanced together), got "
                f"{max_batch}."
            )
        crossfade = _first(crossfade, self.crossfade)
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
        )

    def _enhance_stream(self, reader, scale, write, plan):
        """Chunked enhancement of ``reader``'s signal, emitted via ``write``.

        The signal is divided by ``scale`` (its peak) before enhancement
        and the output multiplied back; see
        :func:`speechbrain_elbo.chunking.process_in_chunks` for the chunks.
        """

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
            return enhanced.to("cpu") * scale

        count = chunk_layout(reader.num_samples, plan.chunk, plan.overlap)[0]
        self.last_num_chunks = count
        return process_in_chunks(
            reader,
            enhance,
            write,
            plan.chunk,
            plan.overlap,
            plan.max_batch,
            plan.crossfade,
            self.min_samples,
            plan.progress,
        )

    def _enhance_to(
        self, reader, scale, plan, output_filename=None, subtype=None
    ):
        """Enhance in chunks; return the waveform or write it atomically."""
        with torch.inference_mode():
            if output_filename is None:
                pieces = []
                self._enhance_stream(reader, scale, pieces.append, plan)
                return torch.cat(pieces)
            with AtomicAudioWriter(
                output_filename, self.sample_rate, subtype
            ) as writer:
                self._enhance_stream(reader, scale, writer.write, plan)
            return output_filename

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
        self,
        waveform,
        sample_rate=None,
        mix_down=False,
        chunk_seconds=None,
        overlap_seconds=None,
        max_batch=None,
        crossfade=None,
        progress=False,
        sampler=None,
        steps=None,
        corrector_steps=None,
        snr=None,
        use_refiner=None,
        seed=None,
        generator=None,
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
        chunk_seconds, overlap_seconds, max_batch, crossfade : optional
            Chunking settings; default those of the interface.
        progress : bool
            Show a progress bar over chunk groups.
        sampler, steps, corrector_steps, snr, use_refiner, seed, generator
            As in :meth:`enhance_batch`. With a seed, chunk group k uses
            seed ``seed + 1000003 k``.

        Returns
        -------
        torch.Tensor
            Enhanced waveform (L',) at the model's sample rate, on the
            waveform's device.
        """
        plan = self._chunk_plan(
            chunk_seconds,
            overlap_seconds,
            max_batch,
            crossfade,
            progress,
            sampler,
            steps,
            corrector_steps,
            snr,
            use_refiner,
            seed,
            generator,
        )
        waveform = to_mono(waveform, mix_down)
        reader, scale = self._tensor_reader(waveform, sample_rate)
        return self._enhance_to(reader, scale, plan).to(waveform.device)

    def enhance_file(
        self,
        path,
        output_filename=None,
        mix_down=False,
        subtype=None,
        chunk_seconds=None,
        overlap_seconds=None,
        max_batch=None,
        crossfade=None,
        progress=False,
        sampler=None,
        steps=None,
        corrector_steps=None,
        snr=None,
        use_refiner=None,
        seed=None,
        generator=None,
    ):
        """Enhance an audio file; long files are streamed in chunks.

        At the model's sample rate the file is read twice, block by block
        (once for its peak, once chunk by chunk), and the output is written
        as it is produced, so memory does not grow with the file's length.
        A file at another sample rate is loaded whole and resampled
        (logged).

        Arguments
        ---------
        path : str or pathlib.Path
            Input audio file (anything soundfile reads: WAV, FLAC, OGG...).
        output_filename : str or pathlib.Path, optional
            Where to write the enhanced audio (atomically: temporary file,
            then rename); it may not be the input file. Without it the
            enhanced waveform is returned.
        mix_down : bool
            Average several channels to mono instead of refusing them.
        subtype : str, optional
            soundfile subtype of the output (default 32-bit float WAV).
        chunk_seconds, overlap_seconds, max_batch, crossfade, progress
            As in :meth:`enhance_long`.
        sampler, steps, corrector_steps, snr, use_refiner, seed, generator
            As in :meth:`enhance_batch`.

        Returns
        -------
        torch.Tensor or pathlib.Path
            The enhanced waveform (L,) at the model's sample rate on the
            CPU, or, with ``output_filename``, the path written.
        """
        path = pathlib.Path(path)
        info = audio_info(path, mix_down)
        if output_filename is not None:
            output_filename = pathlib.Path(output_filename)
            refuse_overwrite(path, output_filename)
        plan = self._chunk_plan(
            chunk_seconds,
            overlap_seconds,
            max_batch,
            crossfade,
            progress,
            sampler,
            steps,
            corrector_steps,
            snr,
            use_refiner,
            seed,
            generator,
        )
        if info.samplerate != self.sample_rate:
            waveform = self.load_waveform(path, mix_down)
            reader, scale = self._tensor_reader(waveform, info.samplerate)
            return self._enhance_to(
                reader, scale, plan, output_filename, subtype
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
                reader, scale, plan, output_filename, subtype
            )
        finally:
            reader.close()

    def load_waveform(self, path, mix_down=False):
        """A file as a mono float32 tensor (L,) at its own rate.

        See :func:`speechbrain_elbo.audio_input.load_waveform`.
        """
        return load_waveform(path, mix_down)


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
    progress: bool


def _first(*values):
    for value in values:
        if value is not None:
            return value
    return None
