"""The clip bank: pieces of real audio the mini data sets are made from.

A :class:`Clip` is a 16 kHz mono file (or a part of one) with its talker or
noise category, its recording group and its origin (package, file and
licence); a :class:`SourceBank` holds the speech and noise clips of one
build. Clips come from the Debian packages
(:func:`speechbrain_elbo.minidata.bank.load_sources`), from the fixtures
bundled with this package (:func:`load_fixtures`, folder
:data:`DEFAULT_SAMPLES`) or from any folder of recordings
(:func:`clips_from_folder`); :func:`save_clips` and :func:`load_clips` keep
them in CSV manifests. :func:`choose_noise` draws the noise of one item.

Example
-------
>>> bank = load_fixtures()
>>> sorted({clip.kind for clip in bank.speech + bank.noise})
['noise', 'speech']
"""

import csv
import hashlib
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import soundfile as sf

from speechbrain_elbo.fileio import audio_info, write_csv_atomic
from speechbrain_elbo.minidata.packages import LICENCES
from speechbrain_elbo.minidata.signals import (
    SAMPLE_RATE,
    SYNTHETIC_COLOURS,
    loop_to_length,
    synthetic_noise,
)

#: The fixtures bundled with the package (package data), used by the tests
#: and when the Debian packages cannot be fetched: three speech clips and
#: two noises, with ``samples.csv`` and ``LICENSE.md``.
DEFAULT_SAMPLES = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class Clip:
    """One piece of real audio: a 16 kHz mono file (or a part of one).

    Arguments
    ---------
    uid : str
        Unique identifier.
    path : str
        The 16 kHz mono audio file.
    kind : str
        ``"speech"`` or ``"noise"``.
    speaker : str
        For speech, the talker; for noise, the category (``ambient``,
        ``music``, ``babble``).
    group : str
        Clips that share a group come from the same recording(s); data set
        splits are made disjoint by group.
    package : str
        The Debian package (for :func:`clips_from_folder`, the folder).
    source : str
        Path(s) of the original file(s) inside the package, ``+``-joined.
    licence : str
        Licence of the original audio.
    start : int
        First sample of the clip in ``path``.
    stop : int
        One past the last sample (``-1``: end of file).

    Example
    -------
    >>> clip = Clip("a", "a.wav", "speech", "ru", "a", "festvox-ru",
    ...             "wav/ru_0001.wav", LICENCES["festvox-ru"], 0, 16000)
    >>> clip.num_samples
    16000
    """

    uid: str
    path: str
    kind: str
    speaker: str
    group: str
    package: str
    source: str
    licence: str
    start: int = 0
    stop: int = -1

    @property
    def num_samples(self):
        """Number of samples of the clip (reads the header if needed)."""
        stop = self.stop if self.stop >= 0 else audio_info(self.path).frames
        return stop - self.start

    def read(self, start=0, stop=None):
        """Reads (part of) the clip as float32.

        Arguments
        ---------
        start : int
            First sample, relative to the clip.
        stop : int or None
            One past the last sample, relative to the clip (None: its end).

        Returns
        -------
        numpy.ndarray
            The samples, 1-D float32.
        """
        begin = self.start + start
        end = self.stop if self.stop >= 0 else None
        if stop is not None:
            end = self.start + stop
        data, rate = sf.read(
            self.path, start=begin, stop=end, dtype="float32", always_2d=True
        )
        if rate != SAMPLE_RATE:
            raise ValueError(
                f"{self.path} has a sample rate of {rate} Hz; the mini data "
                f"sets need {SAMPLE_RATE} Hz clips. Resample it first."
            )
        return data.mean(axis=1)


@dataclass
class SourceBank:
    """The speech and noise clips a mini data set is made from.

    Arguments
    ---------
    speech : list of Clip
        Clean speech clips.
    noise : list of Clip
        Real noise clips.
    origin : str
        Where they come from (``debian`` or the fixture folder).
    fallback : bool
        True when the bundled fixtures replaced the Debian packages.

    Example
    -------
    >>> bank = load_fixtures(DEFAULT_SAMPLES)
    >>> len(bank.speech), len(bank.noise), bank.fallback
    (3, 2, False)
    """

    speech: list
    noise: list
    origin: str
    fallback: bool = False

    def fingerprint(self):
        """A hash of the clips' identities (changes when the sources do).

        Returns
        -------
        str
            16 hex digits.
        """
        digest = hashlib.sha256()
        for clip in self.speech + self.noise:
            digest.update(
                f"{clip.uid}|{clip.group}|{clip.start}|{clip.stop}|"
                f"{Path(clip.path).name}|{clip.num_samples}\n".encode()
            )
        return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------
# Levels, trimming, synthetic noise
# ----------------------------------------------------------------------------


def read_csv(path):
    """Reads a CSV file into a list of dicts (all values strings).

    Arguments
    ---------
    path : str or pathlib.Path
        The file.

    Returns
    -------
    list of dict
        The rows.

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> _ = path.write_text("id,snr\\na,5.0\\n")
    >>> read_csv(path)
    [{'id': 'a', 'snr': '5.0'}]
    """
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


_CLIP_FIELDS = [f.name for f in fields(Clip)]


def save_clips(path, clips):
    """Writes clips to a manifest CSV (paths relative to its folder).

    Arguments
    ---------
    path : str or pathlib.Path
        The manifest.
    clips : list of Clip
        The clips.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> clip = Clip("a", str(root / "a.wav"), "noise", "music", "a",
    ...             "fillets-ng-data", "music/x.ogg", "GPL-2")
    >>> save_clips(root / "m.csv", [clip])
    >>> load_clips(root / "m.csv") == [clip]
    True
    """
    path = Path(path)
    rows = []
    for clip in clips:
        row = asdict(clip)
        row["path"] = os.path.relpath(clip.path, path.parent)
        rows.append(row)
    write_csv_atomic(path, rows, _CLIP_FIELDS)


def load_clips(path):
    """Reads a manifest written by :func:`save_clips`.

    Arguments
    ---------
    path : str or pathlib.Path
        The manifest.

    Returns
    -------
    list of Clip
        The clips, with absolute paths.

    Example
    -------
    >>> clips = load_clips(DEFAULT_SAMPLES / "samples.csv")
    >>> [clip.uid for clip in clips if clip.kind == "noise"]
    ['noise_vinyl_hiss', 'noise_loop_safari']
    """
    path = Path(path)
    clips = []
    for row in read_csv(path):
        row["path"] = str((path.parent / row["path"]).resolve())
        row["start"] = int(row["start"])
        row["stop"] = int(row["stop"])
        clips.append(Clip(**row))
    return clips


def _segments(clip, segment_seconds):
    """Cuts a clip into consecutive parts of ``segment_seconds``."""
    if not segment_seconds:
        return [clip]
    size = round(segment_seconds * SAMPLE_RATE)
    total = clip.num_samples
    count = max(1, total // size)
    parts = []
    for k in range(count):
        start = clip.start + k * size
        stop = clip.start + (total if k == count - 1 else (k + 1) * size)
        parts.append(
            Clip(
                **dict(
                    asdict(clip),
                    uid=f"{clip.uid}_s{k:02d}",
                    start=start,
                    stop=stop,
                )
            )
        )
    return parts


def load_fixtures(samples_dir=DEFAULT_SAMPLES, segment_seconds=None):
    """Reads a folder of fixtures (default: the bundled ones).

    Arguments
    ---------
    samples_dir : str or pathlib.Path
        Folder with ``samples.csv`` (columns of :class:`Clip`, ``path``
        relative to the folder).
    segment_seconds : float or None
        If given, each clip is cut into parts of this length (the last part
        takes the remainder); parts keep their clip's group, so data set
        splits stay disjoint by recording.

    Returns
    -------
    SourceBank
        The fixtures.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``samples.csv``.

    Example
    -------
    >>> bank = load_fixtures(DEFAULT_SAMPLES, segment_seconds=1.0)
    >>> len(bank.speech) > 3, len({c.group for c in bank.speech})
    (True, 3)
    """
    samples_dir = Path(samples_dir)
    manifest = samples_dir / "samples.csv"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{manifest} not found: the fixture folder must hold samples.csv "
            "(made by tools/make_fixtures.py) beside the WAV files."
        )
    clips = load_clips(manifest)
    speech = [
        part
        for clip in clips
        if clip.kind == "speech"
        for part in _segments(clip, segment_seconds)
    ]
    noise = [clip for clip in clips if clip.kind == "noise"]
    return SourceBank(speech, noise, origin=str(samples_dir))


def clips_from_folder(folder, kind="speech", licence="unknown"):
    """Lists the 16 kHz mono audio files of a folder (recursively) as clips.

    Each file is its own group; the speaker (or noise category) is the path
    of the file's folder relative to ``folder`` (for files directly in
    ``folder``, the name of ``folder``).

    Arguments
    ---------
    folder : str or pathlib.Path
        Folder of .wav/.flac files.
    kind : str
        ``"speech"`` or ``"noise"``.
    licence : str
        Licence to record for every file.

    Returns
    -------
    list of Clip
        Sorted by path.

    Raises
    ------
    FileNotFoundError
        If the folder has no audio file.
    ValueError
        If a file is not 16 kHz.

    Example
    -------
    >>> import numpy as np
    >>> root = getfixture("tmp_path")
    >>> sf.write(root / "a.wav", np.zeros(160), 16000)
    >>> [c.uid for c in clips_from_folder(root)]
    ['a']
    """
    folder = Path(folder)
    files = sorted(p for ext in ("*.wav", "*.flac") for p in folder.rglob(ext))
    if not files:
        raise FileNotFoundError(
            f"No .wav or .flac file in {folder}. Point to a folder of 16 kHz "
            "mono recordings."
        )
    clips, wrong = [], []
    for path in files:
        rate = audio_info(path).sample_rate
        if rate != SAMPLE_RATE:
            wrong.append(f"{path} ({rate} Hz)")
            continue
        rel = path.relative_to(folder)
        uid = "_".join(rel.with_suffix("").parts)
        top = rel.parent == Path(".")
        speaker = folder.resolve().name if top else str(rel.parent)
        clips.append(
            Clip(
                uid,
                str(path),
                kind,
                speaker,
                uid,
                str(folder),
                str(rel),
                licence,
            )
        )
    if wrong:
        raise ValueError(
            f"{len(wrong)} file(s) are not at {SAMPLE_RATE} Hz: "
            f"{', '.join(wrong[:5])}. Resample them to 16 kHz first."
        )
    return clips


def choose_noise(noise_clips, num_samples, rng, synthetic_share=0.2):
    """Draws a noise excerpt: a real noise file or a synthetic colour.

    With probability ``synthetic_share`` (or always, when ``noise_clips`` is
    empty) the noise is white, pink or brown (equally likely); otherwise a
    category is drawn uniformly among those present, then a file of it, then
    an excerpt (:func:`loop_to_length`).

    Arguments
    ---------
    noise_clips : list of Clip
        Real noise files available.
    num_samples : int
        Length of the excerpt.
    rng : numpy.random.Generator
        Source of every random choice.
    synthetic_share : float
        Probability of synthetic noise.

    Returns
    -------
    noise : numpy.ndarray
        float32 excerpt (unscaled).
    info : dict
        ``noise_type``, ``noise_source`` (package:path), ``noise_licence``,
        ``noise_offset_s``.

    Example
    -------
    >>> import numpy as np
    >>> noise, info = choose_noise([], 800, np.random.default_rng(0))
    >>> noise.shape, info["noise_type"] in SYNTHETIC_COLOURS
    ((800,), True)
    """
    if not noise_clips or rng.random() < synthetic_share:
        colour = SYNTHETIC_COLOURS[int(rng.integers(len(SYNTHETIC_COLOURS)))]
        info = {
            "noise_type": colour,
            "noise_source": f"synthetic:{colour}",
            "noise_licence": LICENCES["synthetic"],
            "noise_offset_s": 0.0,
        }
        return synthetic_noise(colour, num_samples, rng), info
    categories = sorted({clip.speaker for clip in noise_clips})
    category = categories[int(rng.integers(len(categories)))]
    pool = [clip for clip in noise_clips if clip.speaker == category]
    clip = pool[int(rng.integers(len(pool)))]
    total = clip.num_samples
    if total >= num_samples:
        offset = int(rng.integers(0, total - num_samples + 1))
        wav = clip.read(offset, offset + num_samples)
    else:
        wav, offset = loop_to_length(clip.read(), num_samples, rng)
    info = {
        "noise_type": category,
        "noise_source": f"{clip.package}:{clip.source}",
        "noise_licence": clip.licence,
        "noise_offset_s": round(offset / SAMPLE_RATE, 4),
    }
    return wav, info
