"""Files written atomically, and audio files inspected: one copy of each.

Everything this package writes (manifests, CSV results, reports, enhanced
audio, cached tensors, exported model folders) goes through a temporary file
or folder beside its target that is renamed over the target only once it is
complete: a reader never sees a half-written file, and an interrupted run
leaves the previous version in place.

- :func:`atomic_path`: the primitive, a temporary path renamed on success;
- :func:`write_text_atomic`, :func:`write_json_atomic`,
  :func:`write_csv_atomic`, :func:`write_audio_atomic` and
  :class:`AtomicAudioWriter` (audio streamed block by block);
- :func:`replace_folder`: a finished temporary folder put in place;
- :func:`audio_info`: the header of an audio file, with one clear error.

Example
-------
>>> tmp = getfixture("tmp_path")
>>> write_json_atomic(tmp / "r.json", {"pesq": float("nan"), "n": 2})
>>> print((tmp / "r.json").read_text().strip())
{
  "pesq": null,
  "n": 2
}
>>> write_audio_atomic(tmp / "a.wav", torch.zeros(160), 16000)
>>> audio_info(tmp / "a.wav")
AudioInfo(frames=160, sample_rate=16000, channels=1)
"""

import contextlib
import csv
import json
import logging
import math
import os
import pathlib
import shutil
import tempfile
import uuid
from typing import NamedTuple

import numpy as np
import soundfile as sf
import torch

__all__ = [
    "AudioInfo",
    "atomic_path",
    "write_text_atomic",
    "write_json_atomic",
    "write_csv_atomic",
    "write_audio_atomic",
    "AtomicAudioWriter",
    "replace_folder",
    "audio_info",
    "finite_or_none",
]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path, suffix=".part"):
    """A temporary path beside ``path``, renamed to ``path`` on success.

    The temporary file is in the target's folder (created if needed), so
    the final ``os.replace`` is atomic; on an exception it is removed and
    ``path`` is left as it was.

    Arguments
    ---------
    path : str or pathlib.Path
        The file to write.
    suffix : str
        Suffix of the temporary file (some writers choose the format from
        it).

    Yields
    ------
    pathlib.Path
        Where to write.

    Example
    -------
    >>> path = getfixture("tmp_path") / "sub" / "x.txt"
    >>> with atomic_path(path) as tmp:
    ...     _ = tmp.write_text("done")
    >>> path.read_text()
    'done'
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix, dir=path.parent
    )
    os.close(handle)
    tmp = pathlib.Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.md"
    >>> write_text_atomic(path, "# title\\n")
    >>> path.read_text()
    '# title\\n'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite_or_none(value):
    """``value`` with every NaN or infinite float (nested too) made None.

    Example
    -------
    >>> finite_or_none({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path, data, indent=2):
    """Write ``data`` as strict JSON (NaN and infinities become ``null``).

    Arguments
    ---------
    path : str or pathlib.Path
        The JSON file; parent folders are created.
    data : object
        JSON-serialisable content.
    indent : int
        Indentation of the file.

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.json"
    >>> write_json_atomic(path, {"a": 1})
    >>> json.loads(path.read_text())
    {'a': 1}
    """
    text = json.dumps(finite_or_none(data), indent=indent, allow_nan=False)
    write_text_atomic(path, text + "\n")


def _cell(value, float_digits):
    if value is None:
        return ""
    if isinstance(value, float) and float_digits is not None:
        return "nan" if math.isnan(value) else f"{value:.{float_digits}f}"
    return value


def write_csv_atomic(path, rows, fieldnames=None, float_digits=None):
    """Write dict rows as a CSV file atomically.

    Arguments
    ---------
    path : str or pathlib.Path
        The CSV file; parent folders are created.
    rows : iterable of dict
        The rows; missing fields are left empty, extra keys ignored.
    fieldnames : list of str, optional
        Column order (default: the keys of the first row).
    float_digits : int, optional
        Write floats with this many decimals (NaN as ``nan``); default
        Python's ``str``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "r.csv"
    >>> write_csv_atomic(path, [{"system": "noisy", "pesq": 1.23456}],
    ...                  ["system", "pesq", "nfe"], float_digits=4)
    >>> print(path.read_text().strip())
    system,pesq,nfe
    noisy,1.2346,
    """
    rows = list(rows)
    fieldnames = list(fieldnames or (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=fieldnames, extrasaction="ignore"
            )
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {
                        key: _cell(row.get(key), float_digits)
                        for key in fieldnames
                    }
                )


def write_audio_atomic(path, waveform, sample_rate, subtype=None):
    """Write a mono waveform to ``path`` through a temporary file + rename.

    Arguments
    ---------
    path : str or pathlib.Path
        Output file; its extension selects the format (default WAV).
    waveform : torch.Tensor or numpy.ndarray
        The samples, any shape (flattened).
    sample_rate : int
        Sample rate in Hz.
    subtype : str, optional
        soundfile subtype; default ``"FLOAT"`` for WAV (no clipping, no
        quantisation), soundfile's default otherwise. Integer subtypes clip
        at full scale (logged).

    Example
    -------
    >>> path = getfixture("tmp_path") / "out.wav"
    >>> write_audio_atomic(path, np.array([0.5, -0.5]), 16000, "PCM_16")
    >>> sf.read(path, dtype="int16")[0].tolist()
    [16384, -16384]
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

    Example
    -------
    >>> path = getfixture("tmp_path") / "out.wav"
    >>> with AtomicAudioWriter(path, 16000) as writer:
    ...     writer.write(torch.zeros(100))
    ...     writer.write(torch.ones(60) / 2)
    >>> sf.info(str(path)).frames
    160

    The bytes depend on the samples only (no PEAK chunk with the time of
    writing):

    >>> b"PEAK" in path.read_bytes()
    False
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
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        self.file = sf.SoundFile(
            str(self.tmp),
            mode="w",
            samplerate=self.sample_rate,
            channels=1,
            format=self.format,
            subtype=self.subtype,
        )
        _no_peak_chunk(self.file)
        return self

    def write(self, block):
        """Append a block of samples (any shape, flattened).

        Tensors are written as float32; NumPy arrays keep their precision
        (float64 data quantises exactly as it would have).
        """
        if torch.is_tensor(block):
            block = block.detach().to("cpu", torch.float32).numpy()
        block = np.asarray(block).reshape(-1)
        if self.clips:
            self.clipped += int((np.abs(block) > 1.0).sum())
            block = np.clip(block, -1.0, 1.0)
        self.file.write(block)

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None and self.clipped:
            logger.warning(
                "%s: %d samples exceeded full scale and were clipped by the "
                "%s subtype; use a float subtype to keep them.",
                self.path,
                self.clipped,
                self.subtype,
            )
        return False


#: libsndfile's SFC_SET_ADD_PEAK_CHUNK (sndfile.h)
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def _no_peak_chunk(sound_file):
    """Write no PEAK chunk into a float WAV/AIFF file.

    libsndfile stamps that chunk with the time of writing, so the same
    samples written twice would differ in bytes; without it an output's
    bytes depend on its samples only. (soundfile has no public call for it:
    its C handle is used; if that ever changes, the chunk stays.)
    """
    try:
        from soundfile import _ffi, _snd

        _snd.sf_command(
            sound_file._file, _SFC_SET_ADD_PEAK_CHUNK, _ffi.NULL, _snd.SF_FALSE
        )
    except (ImportError, AttributeError):  # pragma: no cover
        logger.debug("soundfile: cannot turn the PEAK chunk off")


def replace_folder(tmp, target):
    """Put the finished folder ``tmp`` at ``target``, replacing what was there.

    The old ``target`` is renamed aside first and deleted only once ``tmp``
    is in place; if that rename fails, the old folder is put back.

    Arguments
    ---------
    tmp : str or pathlib.Path
        A complete folder, on the same file system as ``target``.
    target : str or pathlib.Path
        Where it belongs.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "new").mkdir(); _ = (root / "new" / "a").write_text("2")
    >>> (root / "out").mkdir(); _ = (root / "out" / "a").write_text("1")
    >>> replace_folder(root / "new", root / "out")
    >>> (root / "out" / "a").read_text(), (root / "new").exists()
    ('2', False)
    """
    tmp, target = pathlib.Path(tmp), pathlib.Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


class AudioInfo(NamedTuple):
    """Header of an audio file."""

    frames: int
    sample_rate: int
    channels: int


def audio_info(path):
    """Read the header of an audio file.

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.

    Returns
    -------
    AudioInfo
        ``(frames, sample_rate, channels)``.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file cannot be parsed as audio.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.txt"
    >>> _ = path.write_text("not audio")
    >>> audio_info(path)
    Traceback (most recent call last):
    ...
    ValueError: Cannot read the audio file .../a.txt (...). Replace it ...
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile raises several types
        raise ValueError(
            f"Cannot read the audio file {path} ({error}). Replace it with a "
            "valid WAV/FLAC file."
        ) from error
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))
