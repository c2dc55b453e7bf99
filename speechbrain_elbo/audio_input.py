"""Audio given for enhancement: checks, loading and block reading.

Everything that can be wrong with the input is found here, before any
network runs, and reported as an :class:`EnhancementInputError` (a
``ValueError``) that names the problem and the fix:

- :func:`check_waveforms`: a batch of tensors (type, dtype, shape, relative
  lengths, too short, NaN/Inf, all zeros);
- :func:`to_mono`: one waveform, channels first, mixed down on request;
- :func:`check_audio_file`: an audio file (missing, unreadable, empty,
  several channels), from its header
  (:func:`speechbrain_elbo.fileio.audio_info`);
- :func:`check_audio_content`: the same, and every sample (NaN/Inf, all
  zeros), read block by block;
- :func:`load_waveform`: a whole file as a mono tensor;
- :class:`FileReader`: a file read block by block, for long files;
- :func:`refuse_overwrite`: an output path that is the input file.

Example
-------
>>> check_waveforms(torch.zeros(1, 4000), min_samples=510, sample_rate=16000)
Traceback (most recent call last):
...
speechbrain_elbo.audio_input.EnhancementInputError: ... all zeros, ...
"""

import os
import pathlib

import soundfile as sf
import torch

from speechbrain_elbo.fileio import audio_info
from speechbrain_elbo.spectral import sample_mask

__all__ = [
    "EnhancementInputError",
    "check_waveforms",
    "to_mono",
    "check_audio_file",
    "check_audio_content",
    "load_waveform",
    "FileReader",
    "refuse_overwrite",
]

MIX_DOWN_HINT = "pass mix_down=True (command line: --mix-down)"


class EnhancementInputError(ValueError):
    """The audio given for enhancement cannot be enhanced as it is."""


def check_waveforms(
    noisy, lengths=None, min_samples=1, sample_rate=None, names=None
):
    """Check a batch for enhancement; raise a clear error if unusable.

    Arguments
    ---------
    noisy : torch.Tensor
        (B, L) or (L,) float waveforms.
    lengths : torch.Tensor, optional
        (B,) relative lengths (SpeechBrain convention); default all ones.
    min_samples : int
        Fewest valid samples an input may have.
    sample_rate : int, optional
        Sample rate of ``noisy``, to say how long ``min_samples`` is.
    names : list of str, optional
        Names of the inputs (e.g. file paths) for the error messages.

    Returns
    -------
    noisy : torch.Tensor
        (B, L), zero past each length.
    lengths : torch.Tensor
        (B,) relative lengths, float32.

    Raises
    ------
    EnhancementInputError
        Wrong type, dtype or shape; empty, too short, NaN/Inf or
        all-zero input.

    Example
    -------
    >>> noisy = torch.ones(2, 4)
    >>> noisy[1, 2:] = float("nan")  # past its length: ignored
    >>> check_waveforms(noisy, torch.tensor([1.0, 0.5]))
    (tensor([[1., 1., 1., 1.],
            [1., 1., 0., 0.]]), tensor([1.0000, 0.5000]))
    """

    def which(indices):
        if names is not None:
            return ", ".join(str(names[i]) for i in indices)
        return f"Input(s) at batch index {indices}"

    if not torch.is_tensor(noisy):
        raise EnhancementInputError(
            f"noisy must be a torch.Tensor, got {type(noisy).__name__}; "
            "use torch.as_tensor(array)."
        )
    if not noisy.is_floating_point():
        raise EnhancementInputError(
            f"noisy has dtype {noisy.dtype}; convert integer PCM to "
            "float first (e.g. wav.float() / 32768)."
        )
    if noisy.dim() == 1:
        noisy = noisy.unsqueeze(0)
    if noisy.dim() != 2:
        raise EnhancementInputError(
            f"Expected mono waveforms of shape (batch, samples), got "
            f"{tuple(noisy.shape)}. Mix several channels down first "
            "(e.g. wav.mean(dim=1)), or use enhance_file(..., "
            "mix_down=True)."
        )
    batch, num_samples = noisy.shape
    if batch == 0 or num_samples == 0:
        raise EnhancementInputError(
            f"The input is empty (shape {tuple(noisy.shape)})."
        )
    if lengths is None:
        lengths = torch.ones(batch, device=noisy.device)
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    if lengths.shape != (batch,):
        raise EnhancementInputError(
            f"lengths must have shape ({batch},), got {tuple(lengths.shape)}."
        )
    if not ((lengths > 0) & (lengths <= 1)).all():
        raise EnhancementInputError(
            "lengths are relative (SpeechBrain convention) and must lie "
            f"in (0, 1]; got {lengths.tolist()}."
        )
    mask = sample_mask(lengths.to(noisy.device), num_samples).bool()
    valid = mask.sum(dim=1)
    short = torch.nonzero(valid < min_samples).flatten().tolist()
    if short:
        duration = ""
        if sample_rate is not None:
            duration = (
                f" ({min_samples / sample_rate * 1000:.0f} ms at "
                f"{sample_rate} Hz)"
            )
        raise EnhancementInputError(
            f"{which(short)}: fewer than {min_samples} samples{duration}: "
            "too short to enhance."
        )
    finite = torch.isfinite(noisy) | ~mask
    if not finite.all():
        bad = torch.nonzero(~finite.all(dim=1)).flatten().tolist()
        raise EnhancementInputError(
            f"{which(bad)}: NaN or Inf samples; "
            "repair them (e.g. torch.nan_to_num) before enhancement."
        )
    silent = ((noisy != 0) & mask).sum(dim=1) == 0
    if silent.any():
        bad = torch.nonzero(silent).flatten().tolist()
        raise EnhancementInputError(
            f"{which(bad)}: all zeros, there is nothing to enhance."
        )
    noisy = torch.where(mask, noisy, torch.zeros_like(noisy))
    return noisy, lengths


def to_mono(waveform, mix_down=False, what="The waveform"):
    """One waveform as shape (L,); channels first are averaged on request.

    Arguments
    ---------
    waveform : torch.Tensor
        Shape (L,), (1, L), or (C, L) with ``mix_down``.
    mix_down : bool
        Average several channels instead of refusing them.
    what : str
        What the waveform is, for error messages.

    Returns
    -------
    torch.Tensor
        Shape (L,).

    Example
    -------
    >>> to_mono(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), mix_down=True)
    tensor([2., 3.])
    """
    if not torch.is_tensor(waveform):
        raise EnhancementInputError(
            f"{what} must be a torch.Tensor, got {type(waveform).__name__}."
        )
    if waveform.dim() == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.dim() == 2:
        if not mix_down:
            raise EnhancementInputError(
                f"{what} has {waveform.shape[0]} channels (channels "
                "first); pass mix_down=True to average them to mono."
            )
        waveform = waveform.mean(dim=0)
    if waveform.dim() != 1:
        raise EnhancementInputError(
            f"{what} must have shape (samples,) or (channels, samples), "
            f"got {tuple(waveform.shape)}."
        )
    return waveform


def check_audio_file(path, mix_down=False, mix_down_hint=MIX_DOWN_HINT):
    """The header of an audio file that can be enhanced.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file.
    mix_down : bool
        Whether several channels will be averaged (else they are refused).
    mix_down_hint : str
        How to ask for ``mix_down``, for the error message.

    Returns
    -------
    speechbrain_elbo.fileio.AudioInfo
        ``(frames, sample_rate, channels)``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    EnhancementInputError
        If it is not audio, is empty, or has several channels without
        ``mix_down``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "stereo.wav"
    >>> sf.write(path, torch.ones(160, 2).numpy() / 2, 16000)
    >>> check_audio_file(path, mix_down=True)
    AudioInfo(frames=160, sample_rate=16000, channels=2)
    >>> check_audio_file(path, mix_down_hint="pass --mix-down")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.audio_input.EnhancementInputError: ...stereo.wav has 2
    channels; pass --mix-down to average them to mono.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file {path} does not exist.")
    try:
        info = audio_info(path)
    except ValueError as error:
        raise EnhancementInputError(
            f"{path} is not a readable audio file ({error.__cause__ or error})."
        ) from error
    if info.frames == 0:
        raise EnhancementInputError(f"{path} is empty (no samples).")
    if info.channels > 1 and not mix_down:
        raise EnhancementInputError(
            f"{path} has {info.channels} channels; {mix_down_hint} to "
            "average them to mono."
        )
    return info


def load_waveform(path, mix_down=False):
    """Read a file as a mono float32 tensor (L,), at its own rate.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file.
    mix_down : bool
        Average several channels instead of refusing them.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, torch.full((3, 2), 0.5).numpy(), 8000)
    >>> load_waveform(path, mix_down=True)
    tensor([0.5000, 0.5000, 0.5000])
    """
    path = pathlib.Path(path)
    check_audio_file(path, mix_down)
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    data = torch.from_numpy(data)
    return data.mean(dim=1) if mix_down else data[:, 0]


def check_audio_content(path, mix_down=False, mix_down_hint=MIX_DOWN_HINT):
    """:func:`check_audio_file`, then every sample, read block by block.

    What can be known of a file before a model is loaded: its header (as
    :func:`check_audio_file`) and its samples, which must be finite and not
    all zero. Memory stays bounded (one block).

    Returns
    -------
    speechbrain_elbo.fileio.AudioInfo

    Raises
    ------
    FileNotFoundError, EnhancementInputError
        As :func:`check_audio_file`; also for NaN or Inf samples or a file
        of zeros.

    Example
    -------
    >>> path = getfixture("tmp_path") / "zeros.wav"
    >>> sf.write(path, torch.zeros(160).numpy(), 16000)
    >>> check_audio_content(path)
    Traceback (most recent call last):
    ...
    speechbrain_elbo.audio_input.EnhancementInputError: ...zeros.wav is all
    zeros: there is nothing to enhance.
    """
    info = check_audio_file(path, mix_down, mix_down_hint)
    reader = FileReader(path, mix_down=info.channels > 1)
    try:
        if reader.peak() == 0.0:
            raise EnhancementInputError(
                f"{path} is all zeros: there is nothing to enhance."
            )
    finally:
        reader.close()
    return info


class FileReader:
    """Mono float32 blocks of an audio file, zero-padded past its end.

    The reader interface of
    :func:`speechbrain_elbo.chunking.process_in_chunks`, for files too long
    to load whole. Close it with :meth:`close`.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file.
    mix_down : bool
        Average several channels (else the first is read).

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, torch.tensor([0.25, -0.5, 0.5]).numpy(), 8000)
    >>> reader = FileReader(path, mix_down=False)
    >>> reader.read(1, 5), reader.peak()
    (tensor([-0.5000,  0.5000,  0.0000,  0.0000]), 0.5)
    >>> reader.close()
    """

    def __init__(self, path, mix_down):
        self.path = pathlib.Path(path)
        self.mix_down = mix_down
        self.file = sf.SoundFile(str(self.path))
        self.num_samples = self.file.frames

    def _mono(self, block):
        block = torch.from_numpy(block)
        return block.mean(dim=1) if self.mix_down else block[:, 0]

    def read(self, start, stop):
        """Samples ``start`` to ``stop`` (exclusive), zeros past the end."""
        out = torch.zeros(stop - start)
        if start < self.num_samples:
            self.file.seek(start)
            count = min(stop, self.num_samples) - start
            block = self.file.read(count, dtype="float32", always_2d=True)
            out[: block.shape[0]] = self._mono(block)
        return out

    def peak(self, block_size=1 << 18):
        """Peak of the whole file; checks every sample is finite."""
        peak = 0.0
        self.file.seek(0)
        for block in self.file.blocks(
            blocksize=block_size, dtype="float32", always_2d=True
        ):
            mono = self._mono(block)
            if not torch.isfinite(mono).all():
                raise EnhancementInputError(
                    f"{self.path} contains NaN or Inf samples; repair the "
                    "file before enhancing it."
                )
            if mono.numel():
                peak = max(peak, float(mono.abs().max()))
        return peak

    def close(self):
        """Close the file."""
        self.file.close()


def refuse_overwrite(source, target):
    """Raise if writing ``target`` would overwrite the input ``source``.

    Catches the same path spelled differently and hard links.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> refuse_overwrite(tmp / "in.wav", tmp / "out.wav")
    >>> refuse_overwrite(tmp / "in.wav", tmp / "." / "in.wav")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.audio_input.EnhancementInputError: The output ... is
    the input file: refusing to overwrite the input; choose another output
    path.
    """
    source = pathlib.Path(source).resolve()
    target = pathlib.Path(target)
    same = target.resolve() == source
    if not same and target.exists():
        same = os.path.samefile(source, target)
    if same:
        raise EnhancementInputError(
            f"The output {target} is the input file: refusing to overwrite "
            "the input; choose another output path."
        )
