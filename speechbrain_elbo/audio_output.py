"""Enhanced audio written to disk atomically, never over its input.

A file is written into a temporary file in the target folder and renamed
over the target only once it is complete, so a reader never sees a
half-written file and a failed run leaves nothing behind.

Example
-------
>>> path = getfixture("tmp_path") / "out.wav"
>>> with AtomicAudioWriter(path, 16000) as writer:
...     writer.write(torch.zeros(100))
...     writer.write(torch.ones(60) / 2)
>>> sf.info(str(path)).frames
160
"""

import logging
import os
import pathlib
import tempfile

import soundfile as sf
import torch

from speechbrain_elbo.audio_input import EnhancementInputError

__all__ = ["write_audio_atomic", "AtomicAudioWriter", "refuse_overwrite"]

logger = logging.getLogger(__name__)


def write_audio_atomic(path, waveform, sample_rate, subtype=None):
    """Write a mono waveform to ``path`` through a temporary file + rename.

    The temporary file lives in the target folder, so the final
    ``os.replace`` is atomic: a reader never sees a half-written file.

    Arguments
    ---------
    path : str or pathlib.Path
        Output file; its extension selects the format (e.g. ``.wav``).
    waveform : torch.Tensor
        Shape (L,), float.
    sample_rate : int
        Sample rate in Hz.
    subtype : str, optional
        soundfile subtype; default ``"FLOAT"`` for WAV (no clipping, no
        quantisation), soundfile's default otherwise. Integer subtypes clip
        at full scale (logged).

    Example
    -------
    >>> path = getfixture("tmp_path") / "out.wav"
    >>> write_audio_atomic(path, torch.zeros(160), 16000)
    >>> sf.info(str(path)).frames
    160
    """
    with AtomicAudioWriter(path, sample_rate, subtype) as writer:
        writer.write(waveform)


class AtomicAudioWriter:
    """Stream blocks into a temporary audio file, then rename it.

    Use it as a context manager: the file appears at ``path`` when the
    block exits normally; on an exception the temporary file is removed
    and ``path`` is left as it was.

    Arguments
    ---------
    path : str or pathlib.Path
        Output file; its extension selects the format (default WAV).
    sample_rate : int
        Sample rate in Hz.
    subtype : str, optional
        As in :func:`write_audio_atomic`.
    """

    def __init__(self, path, sample_rate, subtype=None):
        self.path = pathlib.Path(path)
        self.sample_rate = int(sample_rate)
        fmt = self.path.suffix.lstrip(".").upper() or "WAV"
        if fmt == "WAV" and subtype is None:
            subtype = "FLOAT"
        if not sf.check_format(fmt, subtype):
            raise ValueError(
                f"Cannot write {self.path.name}: format {fmt} with subtype "
                f"{subtype} is not supported by soundfile."
            )
        self.format = fmt
        self.subtype = subtype
        self.clips = subtype is not None and subtype.upper() not in (
            "FLOAT",
            "DOUBLE",
            "VORBIS",
            "OPUS",
        )
        self.clipped = 0

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=".part", dir=self.path.parent
        )
        os.close(handle)
        self.tmp = pathlib.Path(tmp)
        self.file = sf.SoundFile(
            str(self.tmp),
            mode="w",
            samplerate=self.sample_rate,
            channels=1,
            format=self.format,
            subtype=self.subtype,
        )
        return self

    def write(self, block):
        """Append a block of samples (any shape, flattened)."""
        block = block.detach().to("cpu", torch.float32).reshape(-1)
        if self.clips:
            over = block.abs() > 1.0
            self.clipped += int(over.sum())
            block = block.clamp(-1.0, 1.0)
        self.file.write(block.numpy())

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return False
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        if self.clipped:
            logger.warning(
                "%s: %d samples exceeded full scale and were clipped by the "
                "%s subtype; use a float subtype to keep them.",
                self.path,
                self.clipped,
                self.subtype,
            )
        return False


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
