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
import sys
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
    ``path`` is left as it was. A folder that cannot be created or written
    is an ``OSError`` that names ``path`` (not the hidden temporary file).

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path, suffix)
    except OSError as error:
        raise _cannot_write(path, error) from error
    try:
        yield tmp
        try:
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except OSError as error:
            raise _cannot_write(path, error) from error
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


def write_audio_atomic(
    path, waveform, sample_rate, subtype=None, full_scale="scale"
):
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
        soundfile subtype; default ``"FLOAT"`` for WAV (no quantisation),
        soundfile's default otherwise.
    full_scale : str
        ``"scale"`` (default): a waveform whose peak exceeds 1.0 is divided
        by its peak, so that the file is within full scale whatever the
        subtype (logged once, with the gain); ``"keep"``: written as given
        (float subtypes keep samples beyond 1.0, integer ones clip them,
        logged), for data whose level relative to other files matters. See
        :class:`AtomicAudioWriter`.

    Raises
    ------
    ValueError
        If a sample is NaN or infinite (nothing is written).
    OSError
        If the file cannot be written (the message names ``path``).

    Example
    -------
    >>> path = getfixture("tmp_path") / "out.wav"
    >>> write_audio_atomic(path, np.array([0.5, -0.5]), 16000, "PCM_16")
    >>> sf.read(path, dtype="int16")[0].tolist()
    [16384, -16384]
    >>> write_audio_atomic(path, np.array([0.5, -2.0]), 16000)
    >>> sf.read(path)[0].tolist()
    [0.25, -1.0]
    """
    with AtomicAudioWriter(path, sample_rate, subtype, full_scale) as writer:
        writer.write(waveform)


#: Subtypes that store samples beyond full scale as they are.
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")

#: Lossy codecs: no full-scale clip when writing.
LOSSY_SUBTYPES = ("VORBIS", "OPUS", "MPEG_LAYER_III", "MPEG_LAYER_II")


class AtomicAudioWriter:
    """Stream blocks into a temporary audio file, then rename it.

    Use it as a context manager: the file appears at ``path`` when the
    block exits normally; on an exception the temporary files are removed
    and ``path`` is left as it was.

    **Full scale.** With ``full_scale="scale"`` (the default, used by every
    writer of enhanced audio: the command line, ``enhance_file``, the
    recipes' saved test files, the demo) the file never holds a sample
    beyond ``|x| = 1.0``, whatever the subtype: the peak of the blocks is
    tracked and, when it exceeds 1.0, the whole file is divided by it as
    the block exits (a gain, never a clip), logged once with the gain
    (:attr:`gain`). A float WAV is written directly and, only when it
    needs the gain, rescaled in place (one more pass); other subtypes are
    staged in a hidden float64 WAV beside the target and converted at the
    end. With ``full_scale="keep"`` the samples are written as given:
    float subtypes keep them, integer subtypes clip them at full scale
    (the count is logged). NaN or infinite samples are refused in both
    modes (``ValueError``, nothing written). A file that cannot be
    created is an ``OSError`` that names ``path``, not a temporary file.

    Arguments
    ---------
    path : str or pathlib.Path
        Output file; its extension selects the format (default WAV).
    sample_rate : int
        Sample rate in Hz.
    subtype : str, optional
        As in :func:`write_audio_atomic`.
    full_scale : str
        ``"scale"`` or ``"keep"``, as in :func:`write_audio_atomic`.

    Attributes
    ----------
    peak : float
        Largest ``|x|`` of the blocks written (before any scaling).
    gain : float
        The factor applied to the file (1.0 when none was needed).

    Example
    -------
    >>> path = getfixture("tmp_path") / "out.wav"
    >>> with AtomicAudioWriter(path, 16000) as writer:
    ...     writer.write(torch.zeros(100))
    ...     writer.write(torch.ones(60) * 2)
    >>> sf.info(str(path)).frames, float(sf.read(path)[0].max()), writer.gain
    (160, 1.0, 0.5)

    The bytes depend on the samples only (no PEAK chunk with the time of
    writing):

    >>> b"PEAK" in path.read_bytes()
    False
    """

    def __init__(self, path, sample_rate, subtype=None, full_scale="scale"):
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
        if full_scale not in ("scale", "keep"):
            raise ValueError(
                f"full_scale must be 'scale' or 'keep', got {full_scale!r}."
            )
        self.format = fmt
        self.subtype = subtype
        self.full_scale = full_scale
        kind = (subtype or sf.default_subtype(fmt) or "").upper()
        floating = kind in FLOAT_SUBTYPES
        self.clips = not floating and kind not in LOSSY_SUBTYPES
        # "scale" stages the blocks in a float64 WAV unless the output is a
        # float WAV (rescaled in place when needed)
        self.staged = full_scale == "scale" and not (floating and fmt == "WAV")
        self.clipped = 0
        self.peak = 0.0
        self.gain = 1.0
        self._dtype = np.float32
        self.stage = None

    def __enter__(self):
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        try:
            if self.staged:
                self.stage = _temporary(self.path, ".stage.wav")
                self.file = self._open(self.stage, "WAV", "DOUBLE")
            else:
                self.file = self._open(self.tmp, self.format, self.subtype)
        except BaseException:
            self._cleanup(*sys.exc_info())
            raise
        return self

    def _open(self, tmp, fmt, subtype, mode="w"):
        try:
            handle = sf.SoundFile(
                str(tmp),
                mode=mode,
                samplerate=self.sample_rate,
                channels=1,
                format=fmt,
                subtype=subtype,
            )
        except sf.LibsndfileError as error:
            raise _cannot_write(self.path, error) from error
        _no_peak_chunk(handle)
        return handle

    def write(self, block):
        """Append a block of samples (any shape, flattened).

        Tensors are written as float32; NumPy arrays keep their precision
        (float64 data quantises exactly as it would have).

        Raises
        ------
        ValueError
            If the block holds NaN or infinite samples.
        """
        if torch.is_tensor(block):
            block = block.detach().to("cpu", torch.float32).numpy()
        block = np.asarray(block).reshape(-1)
        if block.dtype == np.float64:
            self._dtype = np.float64
        if block.size:
            peak = float(np.abs(block).max())
            if not math.isfinite(peak):
                bad = int((~np.isfinite(block)).sum())
                raise ValueError(
                    f"{self.path}: {bad} samples are NaN or infinite; "
                    "nothing was written."
                )
            self.peak = max(self.peak, peak)
        if self.clips and self.full_scale == "keep":
            self.clipped += int((np.abs(block) > 1.0).sum())
            block = np.clip(block, -1.0, 1.0)
        self.file.write(block)

    def _scale(self):
        """Bring the file within full scale (``"scale"``)."""
        if self.peak > 1.0:
            self.gain = 1.0 / self.peak
        blocks = 1 << 16
        if self.staged:
            with sf.SoundFile(str(self.stage)) as reader:
                with self._open(self.tmp, self.format, self.subtype) as out:
                    for block in reader.blocks(blocks, dtype=self._dtype):
                        out.write(block / self.peak if self.gain < 1 else block)
        elif self.gain < 1:
            with sf.SoundFile(str(self.tmp), mode="r+") as handle:
                for start in range(0, handle.frames, blocks):
                    handle.seek(start)
                    block = handle.read(blocks, dtype=self._dtype)
                    handle.seek(start)
                    handle.write(block / self.peak)
        if self.gain < 1:
            logger.warning(
                "%s: the audio peaks at %.3f, beyond full scale; the file "
                "is scaled by %.4f (%.2f dB) to fit, not clipped.",
                self.path,
                self.peak,
                self.gain,
                20 * math.log10(self.gain),
            )

    def _cleanup(self, exc_type, exc, tb):
        if self.stage is not None:
            self.stage.unlink(missing_ok=True)
        self._atomic.__exit__(exc_type, exc, tb)

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        if exc_type is None and self.full_scale == "scale":
            try:
                self._scale()
            except BaseException:
                self._cleanup(*sys.exc_info())
                raise
        self._cleanup(exc_type, exc, tb)
        if exc_type is None and self.clipped:
            logger.warning(
                "%s: %d samples exceeded full scale and were clipped by the "
                "%s subtype; use a float subtype to keep them.",
                self.path,
                self.clipped,
                self.subtype,
            )
        return False


def _temporary(path, suffix):
    """A new hidden temporary file beside ``path``."""
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix, dir=path.parent
    )
    os.close(handle)
    return pathlib.Path(tmp)


def _cannot_write(path, error):
    """An ``OSError`` about ``path`` (not a temporary file beside it)."""
    reason = (
        getattr(error, "strerror", None)
        or getattr(error, "error_string", None)
        or str(error)
    )
    blocking = next(
        (p for p in pathlib.Path(path).absolute().parents if p.is_file()), None
    )
    if blocking is not None:
        reason = f"{blocking} is a file, not a folder"
    failure = OSError(f"Cannot write {path}: {reason}.")
    failure.errno = getattr(error, "errno", None)
    return failure


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
