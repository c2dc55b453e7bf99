"""Real audio for the offline mini data sets, taken from Debian packages.

The real corpora (VoiceBank-DEMAND, WHAMR!) cannot be downloaded on machines
without network access, but Debian ships recorded speech and noise under free
licences. This module fetches those packages with ``apt-get download`` (no
installation, no dependencies), unpacks them with ``dpkg-deb -x`` into a
cache folder and turns their audio into 16 kHz mono clips:

- speech: ``festvox-ru`` (Russian, male), ``asterisk-core-sounds-en-g722``
  (English, female), ``asterisk-core-sounds-it-g722`` (Italian, male; both
  G.722 decoded with Debian's ``ffmpeg``) and ``pocketsphinx-testdata``
  (LibriVox clips and three raw recordings). Leading and trailing silence is
  trimmed; short telephone prompts are joined into utterances of a few
  seconds.
- noise: ``sonic-pi-samples`` (CC0 ambiences, loops and hiss),
  ``fillets-ng-data`` (music) and babble made by summing several talkers of
  ``fillets-ng-data-nl`` (Dutch voice acting). Synthetic white, pink and
  brown noise come from :func:`synthetic_noise`.

Every clip records its package, its path inside the package and its licence.
When ``apt-get`` is unavailable, :func:`load_sources` falls back (loudly) to
the small fixtures committed in ``tests/samples/``.

The module also holds the level measurements the mixers share: the ITU-T
P.56 active speech level (:func:`active_speech_level`) and silence trimming.
"""

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from scipy.signal import lfilter
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

logger = get_logger(__name__)

#: Sample rate of every prepared clip.
SAMPLE_RATE = 16000

#: Where the packages and the prepared clips are cached by default
#: (overridden by the environment variable ``SPEECHBRAIN_ELBO_SOURCES``).
DEFAULT_CACHE = Path("~/.cache/speechbrain_elbo/sources")

#: The committed fixtures used when the Debian packages cannot be fetched.
DEFAULT_SAMPLES = Path(__file__).resolve().parents[2] / "tests" / "samples"

#: Bumped when the prepared clips change, so that old caches are rebuilt.
PREP_VERSION = 1

#: Licence of each package's audio, as stated in its debian/copyright.
LICENCES = {
    "festvox-ru": "BSD-like (c) 2005 Nickolay V. Shmyrev; modifications "
    "must be marked",
    "asterisk-core-sounds-en-g722": "CC-BY-SA-3.0 (c) 2003-2010 Allison "
    "Smith / Digium",
    "asterisk-core-sounds-it-g722": "CC-BY-3.0 (c) 2012 Carlo Flora",
    "pocketsphinx-testdata": "BSD-2-Clause (c) Carnegie Mellon University",
    "pocketsphinx-testdata/librivox": "public domain (LibriVox recording); "
    "BSD-2-Clause packaging (c) Carnegie Mellon University",
    "sonic-pi-samples": "CC0-1.0 (freesound.org samples via Sonic Pi)",
    "fillets-ng-data": "GPL-2 (c) ALTAR interactive / Fish Fillets NG",
    "fillets-ng-data-nl": "GPL-2 (c) Fish Fillets NG translators",
    "synthetic": "generated noise, no licence restriction",
}

SPEECH_PACKAGES = (
    "festvox-ru",
    "asterisk-core-sounds-en-g722",
    "asterisk-core-sounds-it-g722",
    "pocketsphinx-testdata",
)
NOISE_PACKAGES = ("sonic-pi-samples", "fillets-ng-data", "fillets-ng-data-nl")

_FESTVOX_DIR = "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
_ASTERISK_DIRS = {
    "asterisk-core-sounds-en-g722": (
        "usr/share/asterisk/sounds/en_US_f_Allison",
        "en_allison",
    ),
    "asterisk-core-sounds-it-g722": (
        "usr/share/asterisk/sounds/it_IT_m_Carlo",
        "it_carlo",
    ),
}
#: Asterisk prompts that are tones, not speech.
_ASTERISK_NOT_SPEECH = {
    "beep",
    "beeperr",
    "ascending-2tone",
    "descending-2tone",
}
_SPHINX_DIR = "usr/share/pocketsphinx/test/data"
_SONIC_DIR = "usr/share/sonic-pi/samples"
_MUSIC_DIR = "usr/share/games/fillets-ng/music"
_NL_DIR = "usr/share/games/fillets-ng/sound"

#: Prompts shorter than this are joined with their neighbours (seconds).
MIN_UTTERANCE_SECONDS = 2.5
#: Longer recordings are cut at pauses (seconds).
MAX_UTTERANCE_SECONDS = 15.0
#: Trimmed clips shorter than this are dropped (seconds).
MIN_SPEECH_SECONDS = 0.3
#: Sonic Pi samples shorter than this are not used as noise (seconds).
MIN_NOISE_SECONDS = 3.0
#: Babble: number of files, talkers summed in each, length in seconds.
BABBLE_FILES = 24
BABBLE_TALKERS = 5
BABBLE_SECONDS = 15.0

#: Colours of the synthetic noise (see :func:`synthetic_noise`).
SYNTHETIC_COLOURS = ("white", "pink", "brown")

_BANNER = "!" * 78


class SourcesUnavailable(RuntimeError):
    """Raised when the Debian packages cannot be fetched or decoded."""


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
        The Debian package (or ``tests/samples`` for the fixtures).
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
        stop = self.stop if self.stop >= 0 else sf.info(self.path).frames
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
        True when the committed fixtures replaced the Debian packages.

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


def active_speech_level(wav, sample_rate=SAMPLE_RATE, margin_db=15.9):
    """Active speech level of ITU-T P.56 (method B).

    The envelope of ``|x|`` (two first-order smoothers, 30 ms) is compared
    with thresholds spaced by 6 dB; a sample counts as active while the
    envelope exceeded a threshold within the last 200 ms (hangover). The
    active level is the energy divided by the active time at the threshold
    that lies ``margin_db`` below it (interpolated in dB). The result is
    exactly proportional to the signal's power (the signal is normalised by
    its peak first), so SNRs measured with it do not depend on the gain.

    Arguments
    ---------
    wav : array_like
        1-D signal.
    sample_rate : int
        Its sample rate.
    margin_db : float
        The P.56 margin between the active level and its threshold.

    Returns
    -------
    level : float
        Mean power over the active samples (linear, same units as ``x**2``).
    activity : float
        Fraction of active samples, in [0, 1].

    Example
    -------
    >>> t = np.arange(32000) / 16000
    >>> sine = 0.5 * np.sin(2 * np.pi * 440 * t)
    >>> level, activity = active_speech_level(sine)
    >>> round(float(10 * np.log10(level)), 1), round(activity, 2)
    (-9.0, 0.99)
    >>> gated = sine * (t < 1)  # on for 1 s; the hangover adds about 0.3 s
    >>> level, activity = active_speech_level(gated)
    >>> round(float(10 * np.log10(level)), 1), round(activity, 2)
    (-10.1, 0.64)
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return 0.0, 0.0
    y = x / peak
    energy = float(np.sum(y * y))
    g = np.exp(-1.0 / (sample_rate * 0.03))
    env = lfilter([1 - g], [1, -g], lfilter([1 - g], [1, -g], np.abs(y)))
    thresholds = 2.0 ** np.arange(-20, 1)
    hang = max(1, round(0.2 * sample_rate))
    above = env[None, :] >= thresholds[:, None]
    counts = np.cumsum(above, axis=1, dtype=np.int32)
    lagged = np.zeros_like(counts)
    lagged[:, hang:] = counts[:, :-hang]
    active = np.sum((counts - lagged) > 0, axis=1)
    valid = active > 0
    levels = np.full(thresholds.shape, np.inf)
    levels[valid] = 10 * np.log10(energy / active[valid])
    delta = levels - 20 * np.log10(thresholds)
    below = np.nonzero(valid & (delta <= margin_db))[0]
    if below.size == 0:
        level_db = levels[valid][-1]
    elif below[0] == 0:
        level_db = levels[0]
    else:
        j = below[0]
        frac = (delta[j - 1] - margin_db) / (delta[j - 1] - delta[j])
        level_db = levels[j - 1] + frac * (levels[j] - levels[j - 1])
    level = 10 ** (level_db / 10) * peak**2
    activity = min(1.0, energy * peak**2 / (x.size * level))
    return float(level), float(activity)


def power(wav):
    """Mean power of a signal (for noise, which is not gated).

    Arguments
    ---------
    wav : array_like
        The signal.

    Returns
    -------
    float
        ``mean(x ** 2)``.

    Example
    -------
    >>> power([1.0, -1.0, 0.0, 0.0])
    0.5
    """
    x = np.asarray(wav, dtype=np.float64)
    return float(np.mean(x * x)) if x.size else 0.0


def trim_silence(wav, sample_rate=SAMPLE_RATE, floor_db=35.0, margin=0.1):
    """Finds the span of a recording that holds sound.

    Frames of 20 ms whose level is within ``floor_db`` of the loudest frame
    count as sound; the span runs from the first to the last of them, widened
    by ``margin`` seconds on each side (inside the recording).

    Arguments
    ---------
    wav : array_like
        1-D signal.
    sample_rate : int
        Its sample rate.
    floor_db : float
        Frames more than this below the loudest frame are silence.
    margin : float
        Seconds of context kept before the first and after the last sound.

    Returns
    -------
    tuple of int
        ``(start, stop)`` sample indices; ``(0, 0)`` for a silent signal.

    Example
    -------
    >>> x = np.zeros(16000)
    >>> x[8000:9600] = 0.5
    >>> trim_silence(x, margin=0.05)
    (7200, 10400)
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    frame = max(1, round(0.02 * sample_rate))
    n_frames = int(np.ceil(x.size / frame))
    if n_frames == 0:
        return 0, 0
    padded = np.zeros(n_frames * frame)
    padded[: x.size] = x
    frame_power = np.mean(padded.reshape(n_frames, frame) ** 2, axis=1)
    loudest = frame_power.max()
    if loudest <= 0:
        return 0, 0
    loud = np.nonzero(frame_power >= loudest * 10 ** (-floor_db / 10))[0]
    keep = round(margin * sample_rate)
    start = max(0, loud[0] * frame - keep)
    stop = min(x.size, (loud[-1] + 1) * frame + keep)
    return int(start), int(stop)


def split_at_pauses(wav, max_samples, sample_rate=SAMPLE_RATE):
    """Cuts a long recording into parts of at most ``max_samples``.

    A part that is too long is cut at its quietest 20 ms frame (energy
    smoothed over 100 ms) within its middle half, recursively.

    Arguments
    ---------
    wav : numpy.ndarray
        1-D signal.
    max_samples : int
        Maximum length of a part (at least 0.4 s).
    sample_rate : int
        Sample rate.

    Returns
    -------
    list of numpy.ndarray
        Consecutive parts whose concatenation is ``wav``.

    Example
    -------
    >>> x = np.ones(16000)
    >>> x[9000:9400] = 0.0
    >>> [p.size for p in split_at_pauses(x, 12000)]
    [9120, 6880]
    """
    frame = max(1, round(0.02 * sample_rate))
    if max_samples < 20 * frame:
        raise ValueError(
            f"max_samples={max_samples} is too short to cut at pauses; use "
            f"at least {20 * frame} samples (0.4 s)."
        )
    if wav.size <= max_samples:
        return [wav]
    n_frames = wav.size // frame
    energy = np.mean(wav[: n_frames * frame].reshape(n_frames, frame) ** 2, 1)
    energy = np.convolve(energy, np.ones(5) / 5, mode="same")
    low, high = n_frames // 4, max(n_frames // 4 + 1, 3 * n_frames // 4)
    cut = (low + int(np.argmin(energy[low:high]))) * frame + frame // 2
    return split_at_pauses(wav[:cut], max_samples, sample_rate) + (
        split_at_pauses(wav[cut:], max_samples, sample_rate)
    )


def fade_edges(wav, sample_rate=SAMPLE_RATE, seconds=0.005):
    """Applies short raised-cosine fades at both ends (avoids clicks).

    Arguments
    ---------
    wav : numpy.ndarray
        1-D signal (not modified).
    sample_rate : int
        Its sample rate.
    seconds : float
        Length of each fade.

    Returns
    -------
    numpy.ndarray
        The faded copy.

    Example
    -------
    >>> fade_edges(np.ones(8), sample_rate=1000, seconds=0.003).round(2)
    array([0.  , 0.25, 0.75, 1.  , 1.  , 0.75, 0.25, 0.  ], dtype=float32)
    """
    out = np.array(wav, dtype=np.float32, copy=True)
    n = min(round(seconds * sample_rate), out.size // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
        out[:n] *= ramp
        out[-n:] *= ramp[::-1]
    return out


def synthetic_noise(colour, num_samples, rng, sample_rate=SAMPLE_RATE):
    """White, pink or brown Gaussian noise with unit mean power.

    Pink and brown noise shape a white spectrum by ``f ** -0.5`` and
    ``f ** -1`` (power ``1/f`` and ``1/f**2``); below 20 Hz the gain is held
    at its 20 Hz value so that the signal does not drift.

    Arguments
    ---------
    colour : str
        ``"white"``, ``"pink"`` or ``"brown"``.
    num_samples : int
        Length.
    rng : numpy.random.Generator
        Source of randomness.
    sample_rate : int
        Sample rate (sets the 20 Hz corner).

    Returns
    -------
    numpy.ndarray
        float32 noise of mean power 1.

    Example
    -------
    >>> x = synthetic_noise("pink", 16000, np.random.default_rng(0))
    >>> x.shape, round(float(np.mean(x ** 2)), 6)
    ((16000,), 1.0)
    >>> synthetic_noise("blue", 10, np.random.default_rng(0))
    Traceback (most recent call last):
    ...
    ValueError: Unknown noise colour 'blue'; use one of white, pink, brown.
    """
    exponents = {"white": 0.0, "pink": 0.5, "brown": 1.0}
    if colour not in exponents:
        raise ValueError(
            f"Unknown noise colour {colour!r}; use one of "
            f"{', '.join(exponents)}."
        )
    white = rng.standard_normal(num_samples)
    if exponents[colour] > 0:
        spec = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(num_samples, 1.0 / sample_rate)
        spec *= np.maximum(freqs, 20.0) ** -exponents[colour]
        white = np.fft.irfft(spec, n=num_samples)
    white -= white.mean()
    return (white / np.sqrt(np.mean(white**2))).astype(np.float32)


def loop_to_length(wav, num_samples, rng, crossfade=0.02):
    """A random excerpt of ``num_samples``, looping a short signal.

    A signal at least as long as ``num_samples`` gives an excerpt at a
    uniformly drawn offset. A shorter one is repeated from a random offset,
    with raised-cosine cross-fades of ``crossfade`` seconds at the joins.

    Arguments
    ---------
    wav : numpy.ndarray
        1-D signal.
    num_samples : int
        Wanted length.
    rng : numpy.random.Generator
        Draws the offset.
    crossfade : float
        Length of each cross-fade in seconds (at 16 kHz).

    Returns
    -------
    excerpt : numpy.ndarray
        float32 signal of ``num_samples``.
    offset : int
        Where in ``wav`` the excerpt starts.

    Example
    -------
    >>> x, offset = loop_to_length(np.ones(100), 250, np.random.default_rng(0))
    >>> x.shape, bool(np.allclose(x, 1.0)), 0 <= offset < 100
    ((250,), True, True)
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.size == 0:
        raise ValueError("Cannot take an excerpt of an empty signal.")
    if wav.size >= num_samples:
        offset = int(rng.integers(0, wav.size - num_samples + 1))
        return wav[offset : offset + num_samples].copy(), offset
    offset = int(rng.integers(0, wav.size))
    fade = min(round(crossfade * SAMPLE_RATE), wav.size // 4)
    period = wav.size - fade
    copies = int(np.ceil((num_samples + offset) / period)) + 1
    out = np.zeros(copies * period + fade, dtype=np.float64)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        shaped = wav.astype(np.float64)
        shaped[:fade] *= ramp
        shaped[-fade:] *= ramp[::-1]
    else:
        shaped = wav.astype(np.float64)
    for k in range(copies):
        out[k * period : k * period + wav.size] += shaped
    return out[offset : offset + num_samples].astype(np.float32), offset


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


def scale_to_snr(speech_level, noise, snr_db):
    """Scales noise so that ``10 log10(speech_level / power) = snr_db``.

    Arguments
    ---------
    speech_level : float
        Active power of the speech (:func:`active_speech_level`).
    noise : numpy.ndarray
        The noise.
    snr_db : float
        Wanted SNR in dB.

    Returns
    -------
    numpy.ndarray
        The scaled noise (float64).

    Example
    -------
    >>> n = scale_to_snr(1.0, np.array([1.0, -1.0]), 20.0)
    >>> round(float(10 * np.log10(1.0 / power(n))), 6)
    20.0
    """
    noise_power = power(noise)
    if noise_power <= 0:
        raise ValueError("The noise is silent; it cannot be scaled to an SNR.")
    gain = np.sqrt(speech_level / (noise_power * 10 ** (snr_db / 10)))
    return np.asarray(noise, dtype=np.float64) * gain


# ----------------------------------------------------------------------------
# Files and manifests
# ----------------------------------------------------------------------------


def write_wav_atomic(path, wav, sample_rate=SAMPLE_RATE):
    """Writes a 16-bit PCM WAV file through a temporary file and a rename.

    Arguments
    ---------
    path : str or pathlib.Path
        Destination (its folder is created).
    wav : array_like
        1-D float samples in [-1, 1].
    sample_rate : int
        Sample rate.

    Raises
    ------
    ValueError
        If samples are outside [-1, 1] (they would clip).

    Example
    -------
    >>> path = getfixture("tmp_path") / "x.wav"
    >>> write_wav_atomic(path, np.array([0.5, -0.5]))
    >>> sf.read(path, dtype="int16")[0].tolist()
    [16384, -16384]
    """
    path = Path(path)
    x = np.asarray(wav, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        raise ValueError(
            f"Samples for {path} reach {peak:.3f} > 1 and would clip; "
            "rescale the signal before writing it."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    try:
        sf.write(tmp, x, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_csv_atomic(path, rows, columns=None):
    """Writes dict rows as CSV through a temporary file and a rename.

    Arguments
    ---------
    path : str or pathlib.Path
        Destination.
    rows : list of dict
        The rows.
    columns : list of str or None
        Column order (default: the keys of the first row).

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> write_csv_atomic(path, [{"id": "a", "snr": 5.0}])
    >>> print(path.read_text().strip())
    id,snr
    a,5.0
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns or (rows[0].keys() if rows else []))
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as fout:
        writer = csv.DictWriter(fout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


#: Name of the file that records how a data set folder was built.
STAMP_NAME = "minidata.json"


def build_once(out_dir, options, build, overwrite=False):
    """Builds a folder atomically, once per set of options.

    ``build(tmp)`` fills a temporary sibling folder, which is renamed to
    ``out_dir`` when it succeeds, with ``options`` saved in
    :data:`STAMP_NAME`. A second call with equal options does nothing; a
    folder built with other options is replaced only if ``overwrite``.

    Arguments
    ---------
    out_dir : str or pathlib.Path
        The folder to build.
    options : dict
        JSON-serialisable description of what is built.
    build : callable
        Called with the temporary folder.
    overwrite : bool
        Replace a folder built with other options (or holding other files).

    Returns
    -------
    bool
        True if it was built now, False if it was already there.

    Raises
    ------
    FileExistsError
        If ``out_dir`` holds something else and ``overwrite`` is False.

    Example
    -------
    >>> out = getfixture("tmp_path") / "data"
    >>> build_once(out, {"n": 1}, lambda tmp: (tmp / "a.txt").touch())
    True
    >>> build_once(out, {"n": 1}, lambda tmp: 1 / 0)
    False
    >>> build_once(out, {"n": 2}, lambda tmp: None)
    Traceback (most recent call last):
    ...
    FileExistsError: ...built with other options...
    """
    out_dir = Path(out_dir)
    options = json.loads(json.dumps(options))
    stamp = out_dir / STAMP_NAME
    if stamp.is_file():
        if json.loads(stamp.read_text()) == options:
            logger.info(f"{out_dir} is already built with these options")
            return False
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} was built with other options "
                f"({stamp}). Pass overwrite=True (--overwrite) to rebuild "
                "it, or choose another output folder."
            )
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not a mini data set folder. Choose an "
            "empty or new folder, or pass overwrite=True (--overwrite)."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        (tmp / STAMP_NAME).write_text(json.dumps(options, indent=1) + "\n")
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


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
    """
    path = Path(path)
    clips = []
    for row in read_csv(path):
        row["path"] = str((path.parent / row["path"]).resolve())
        row["start"] = int(row["start"])
        row["stop"] = int(row["stop"])
        clips.append(Clip(**row))
    return clips


def _load_audio(path):
    """Reads any audio file soundfile can decode as mono float32."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), rate


def to_16k(wav, rate):
    """Resamples a mono float signal to 16 kHz.

    Arguments
    ---------
    wav : numpy.ndarray
        1-D signal.
    rate : int
        Its sample rate.

    Returns
    -------
    numpy.ndarray
        float32 signal at 16 kHz.

    Example
    -------
    >>> to_16k(np.zeros(44100, dtype=np.float32), 44100).shape
    (16000,)
    """
    if rate == SAMPLE_RATE or np.size(wav) == 0:
        return np.asarray(wav, dtype=np.float32)
    out = torchaudio.functional.resample(
        torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)),
        rate,
        SAMPLE_RATE,
    )
    return out.numpy()


def _peak_normalise(wav, peak=0.9):
    """Scales so that the peak is ``peak`` (silent input is returned)."""
    top = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav if top == 0 else (wav * (peak / top)).astype(np.float32)


# ----------------------------------------------------------------------------
# Debian packages
# ----------------------------------------------------------------------------


def _run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def fetch_package(name, cache_dir=None, apt_get="apt-get"):
    """Downloads a Debian package and unpacks it into the cache (once).

    ``apt-get download`` fetches the .deb without installing it; when the
    package is unknown, ``apt-get update`` is run once (as root) and the
    download retried. ``dpkg-deb -x`` unpacks it into a temporary folder that
    is renamed into place, so an interrupted run leaves nothing half done.

    Arguments
    ---------
    name : str
        The package.
    cache_dir : str or pathlib.Path or None
        Cache root (default :data:`DEFAULT_CACHE`).
    apt_get : str
        The apt-get command (a parameter so tests can make it fail).

    Returns
    -------
    pathlib.Path
        The folder holding the package's file tree (``usr/...``).

    Raises
    ------
    SourcesUnavailable
        If apt-get or dpkg-deb is missing or fails.
    """
    root = _cache_root(cache_dir) / "packages"
    target = root / name
    if (target / ".complete").is_file():
        return target
    if shutil.which(apt_get) is None or shutil.which("dpkg-deb") is None:
        raise SourcesUnavailable(
            f"'{apt_get}' or 'dpkg-deb' is not available, so the Debian "
            f"package {name} cannot be fetched."
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        logger.info(f"Downloading the Debian package {name}")
        result = _run([apt_get, "download", name], cwd=tmp)
        if result.returncode != 0 and os.geteuid() == 0:
            _run([apt_get, "update", "-q"])
            result = _run([apt_get, "download", name], cwd=tmp)
        debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if result.returncode != 0 or not debs:
            raise SourcesUnavailable(
                f"'{apt_get} download {name}' failed: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        tree = Path(tmp) / "tree"
        result = _run(["dpkg-deb", "-x", str(debs[0]), str(tree)])
        if result.returncode != 0:
            raise SourcesUnavailable(
                f"dpkg-deb -x {debs[0].name} failed: {result.stderr.strip()}"
            )
        (tree / ".complete").write_text(debs[0].name + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tree, target)
    return target


def ensure_ffmpeg(install=True, apt_get="apt-get"):
    """Returns the ffmpeg executable, installing Debian's if needed.

    Arguments
    ---------
    install : bool
        Whether to run ``apt-get install ffmpeg`` (root only) when absent.
    apt_get : str
        The apt-get command.

    Returns
    -------
    str
        Path of ffmpeg.

    Raises
    ------
    SourcesUnavailable
        If ffmpeg is absent and cannot be installed.
    """
    found = shutil.which("ffmpeg")
    if found:
        return found
    if install and shutil.which(apt_get) and os.geteuid() == 0:
        logger.info("Installing Debian's ffmpeg to decode G.722 prompts")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = [apt_get, "install", "-y", "-q", "--no-install-recommends"]
        result = _run(cmd + ["ffmpeg"], env=env)
        if result.returncode != 0:
            _run([apt_get, "update", "-q"])
            result = _run(cmd + ["ffmpeg"], env=env)
        found = shutil.which("ffmpeg")
        if found:
            return found
    raise SourcesUnavailable(
        "ffmpeg is needed to decode the G.722 prompts of asterisk-core-sounds "
        "but is not installed. Install it (apt-get install ffmpeg) and retry."
    )


def decode_g722(sources, destinations, ffmpeg=None, batch=64):
    """Decodes G.722 files to 16 kHz 16-bit WAV with ffmpeg.

    Many files are decoded by one ffmpeg process (one input and one output
    per file), which avoids starting a process per prompt.

    Arguments
    ---------
    sources : list of pathlib.Path
        G.722 files.
    destinations : list of pathlib.Path
        WAV files to write (same order).
    ffmpeg : str or None
        The ffmpeg executable (default: :func:`ensure_ffmpeg`).
    batch : int
        Files per ffmpeg process.

    Raises
    ------
    SourcesUnavailable
        If ffmpeg fails.
    """
    ffmpeg = ffmpeg or ensure_ffmpeg()
    pairs = list(zip(sources, destinations, strict=True))
    for first in range(0, len(pairs), batch):
        chunk = pairs[first : first + batch]
        cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y"]
        for src, _ in chunk:
            cmd += ["-f", "g722", "-i", str(src)]
        for index, (_, dst) in enumerate(chunk):
            cmd += ["-map", f"{index}:a", "-ar", str(SAMPLE_RATE), "-ac", "1"]
            cmd += ["-c:a", "pcm_s16le", str(dst)]
        result = _run(cmd)
        if result.returncode != 0:
            raise SourcesUnavailable(
                f"ffmpeg failed to decode G.722: {result.stderr.strip()[-500:]}"
            )


def _cache_root(cache_dir):
    if cache_dir is None:
        cache_dir = os.environ.get("SPEECHBRAIN_ELBO_SOURCES", DEFAULT_CACHE)
    return Path(cache_dir).expanduser()


def _trimmed(wav):
    start, stop = trim_silence(wav)
    return wav[start:stop]


def _speech_items(packages, ffmpeg_tmp):
    """Yields (speaker, package, source, licence, waveform) per recording."""
    festvox = packages["festvox-ru"] / _FESTVOX_DIR
    for path in sorted(festvox.glob("ru_*.wav")):
        wav, rate = _load_audio(path)
        yield (
            "ru_nsh",
            "festvox-ru",
            str(path.relative_to(packages["festvox-ru"])),
            LICENCES["festvox-ru"],
            to_16k(wav, rate),
        )
    for package, (folder, speaker) in _ASTERISK_DIRS.items():
        base = packages[package] / folder
        prompts = sorted(
            p
            for p in base.rglob("*.g722")
            if p.stem not in _ASTERISK_NOT_SPEECH
            and p.relative_to(base).parts[0] != "silence"
        )
        wavs = [
            ffmpeg_tmp / package / f"{i:05d}.wav" for i in range(len(prompts))
        ]
        wavs[0].parent.mkdir(parents=True, exist_ok=True)
        decode_g722(prompts, wavs)
        for prompt, wav_path in zip(prompts, wavs, strict=True):
            wav, rate = _load_audio(wav_path)
            yield (
                speaker,
                package,
                str(prompt.relative_to(packages[package])),
                LICENCES[package],
                to_16k(wav, rate),
            )
    sphinx = packages["pocketsphinx-testdata"] / _SPHINX_DIR
    for path in sorted((sphinx / "librivox").glob("*.wav")):
        wav, rate = _load_audio(path)
        yield (
            "librivox_austen",
            "pocketsphinx-testdata",
            str(path.relative_to(packages["pocketsphinx-testdata"])),
            LICENCES["pocketsphinx-testdata/librivox"],
            to_16k(wav, rate),
        )
    for path in sorted(sphinx.glob("*.raw")):
        raw = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
        yield (
            f"sphinx_{path.stem}",
            "pocketsphinx-testdata",
            str(path.relative_to(packages["pocketsphinx-testdata"])),
            LICENCES["pocketsphinx-testdata"],
            raw,
        )


def prepare_speech(cache_dir=None, apt_get="apt-get"):
    """Fetches the speech packages and writes trimmed 16 kHz utterances.

    Recordings are trimmed to their sound (plus 0.1 s each side, 5 ms fades);
    consecutive prompts of one talker shorter than
    :data:`MIN_UTTERANCE_SECONDS` are joined, and recordings longer than
    :data:`MAX_UTTERANCE_SECONDS` are cut at pauses
    (:func:`split_at_pauses`; the parts share a ``group``, so they never land
    in two splits). The result is cached: a second call only reads the
    manifest.

    Arguments
    ---------
    cache_dir : str or pathlib.Path or None
        Cache root (default :data:`DEFAULT_CACHE`).
    apt_get : str
        The apt-get command.

    Returns
    -------
    list of Clip
        One clip per utterance.

    Raises
    ------
    SourcesUnavailable
        If a package cannot be fetched or decoded.
    """
    root = _cache_root(cache_dir)
    manifest = root / f"speech_v{PREP_VERSION}.csv"
    if manifest.is_file():
        return load_clips(manifest)
    packages = {
        name: fetch_package(name, root, apt_get) for name in SPEECH_PACKAGES
    }
    out_dir = root / f"speech_v{PREP_VERSION}"
    clips, pending, counts = [], [], {}
    min_len = MIN_UTTERANCE_SECONDS * SAMPLE_RATE
    max_len = round(MAX_UTTERANCE_SECONDS * SAMPLE_RATE)

    def write(wav, items, group=None):
        speaker, package, _, licence, _ = items[0]
        uid = f"{speaker}_{counts.get(speaker, 0):04d}"
        counts[speaker] = counts.get(speaker, 0) + 1
        path = out_dir / speaker / f"{uid}.wav"
        write_wav_atomic(path, _peak_normalise(wav, 0.9))
        source = "+".join(item[2] for item in items)
        clips.append(
            Clip(
                uid,
                str(path),
                "speech",
                speaker,
                group or uid,
                package,
                source,
                licence,
            )
        )
        return uid

    def flush():
        if pending:
            write(np.concatenate([item[4] for item in pending]), pending)
            pending.clear()

    with tempfile.TemporaryDirectory(dir=root, prefix=".decode-") as tmp:
        items = _speech_items(packages, Path(tmp))
        for item in tqdm(items, desc="Preparing speech", unit="file"):
            wav = _trimmed(item[4])
            if wav.size < MIN_SPEECH_SECONDS * SAMPLE_RATE:
                continue
            item = item[:4] + (fade_edges(wav),)
            if pending and pending[0][0] != item[0]:
                flush()
            if wav.size > max_len:
                flush()
                parts = split_at_pauses(wav, max_len)
                group = write(fade_edges(parts[0]), [item])
                for part in parts[1:]:
                    write(fade_edges(part), [item], group)
                continue
            pending.append(item)
            if sum(p[4].size for p in pending) >= min_len:
                flush()
        flush()
    save_clips(manifest, clips)
    return clips


def _babble_groups(nl_root, rng):
    """Splits the Dutch voice-acting files into disjoint groups by level."""
    files = nl_root.rglob("*.ogg")
    levels = sorted({p.parent.parent for p in files if p.parent.name == "nl"})
    order = rng.permutation(len(levels))
    groups = [[] for _ in range(BABBLE_FILES)]
    for rank, index in enumerate(order):
        groups[rank % BABBLE_FILES].append(levels[index])
    return groups


def make_babble(talker_files, num_talkers, num_samples, rng):
    """Sums several talkers, each a chain of trimmed recordings, at one level.

    Arguments
    ---------
    talker_files : list of pathlib.Path
        Recordings to draw from (any rate, mono or stereo).
    num_talkers : int
        Number of simultaneous talkers.
    num_samples : int
        Length of the babble at 16 kHz.
    rng : numpy.random.Generator
        Chooses the recordings.

    Returns
    -------
    babble : numpy.ndarray
        float32 babble, peak 0.9.
    used : list of pathlib.Path
        The recordings that went into it.
    """
    cache, used = {}, []
    total = np.zeros(num_samples, dtype=np.float64)
    for _ in range(num_talkers):
        track, length = [], 0
        while length < num_samples:
            path = talker_files[int(rng.integers(len(talker_files)))]
            if path not in cache:
                wav, rate = _load_audio(path)
                cache[path] = fade_edges(_trimmed(to_16k(wav, rate)))
            if cache[path].size == 0:
                continue
            used.append(path)
            track.append(cache[path])
            length += cache[path].size
        talker = np.concatenate(track)[:num_samples]
        level, _ = active_speech_level(talker)
        total += talker / np.sqrt(max(level, 1e-12))
    return _peak_normalise(total.astype(np.float32)), used


def _sonic_pi_cc0(package_root):
    """Names of the Sonic Pi samples documented as CC0.

    A sample counts when debian/copyright gives it ``License: CC0`` or the
    samples' README (which places the samples it lists under CC0) lists it;
    the few samples documented in neither place are left out.
    """
    names = set()
    readme = package_root / _SONIC_DIR / "README.md"
    if readme.is_file():
        names |= set(re.findall(r"`:([A-Za-z0-9_]+)`", readme.read_text()))
    copyright_file = package_root / "usr/share/doc/sonic-pi-samples/copyright"
    if copyright_file.is_file():
        blocks = copyright_file.read_text().split("\n\n")
        for block in blocks:
            if re.search(r"^License:\s*CC0", block, re.MULTILINE):
                names |= set(
                    re.findall(r"etc/samples/([A-Za-z0-9_]+)\.flac", block)
                )
    return names


def prepare_noise(cache_dir=None, apt_get="apt-get"):
    """Fetches the noise packages and writes 16 kHz mono noise files.

    - ``ambient``: every Sonic Pi sample of at least
      :data:`MIN_NOISE_SECONDS` that is documented as CC0;
    - ``music``: the Fish Fillets NG soundtrack (GPL-2);
    - ``babble``: :data:`BABBLE_FILES` files of :data:`BABBLE_SECONDS`, each
      the sum of :data:`BABBLE_TALKERS` talkers drawn from its own set of
      game levels of the Dutch voice acting (GPL-2), so no recording is
      shared between two babble files.

    Cached like :func:`prepare_speech`.

    Arguments
    ---------
    cache_dir : str or pathlib.Path or None
        Cache root (default :data:`DEFAULT_CACHE`).
    apt_get : str
        The apt-get command.

    Returns
    -------
    list of Clip
        One clip per noise file.

    Raises
    ------
    SourcesUnavailable
        If a package cannot be fetched.
    """
    root = _cache_root(cache_dir)
    manifest = root / f"noise_v{PREP_VERSION}.csv"
    if manifest.is_file():
        return load_clips(manifest)
    packages = {
        name: fetch_package(name, root, apt_get) for name in NOISE_PACKAGES
    }
    out_dir = root / f"noise_v{PREP_VERSION}"
    clips = []

    def add(category, uid, wav, package, source):
        path = out_dir / category / f"{uid}.wav"
        write_wav_atomic(path, _peak_normalise(wav, 0.9))
        clips.append(
            Clip(
                uid,
                str(path),
                "noise",
                category,
                uid,
                package,
                source,
                LICENCES[package],
            )
        )

    sonic = packages["sonic-pi-samples"]
    files = sorted((sonic / _SONIC_DIR).glob("*.flac"))
    cc0 = _sonic_pi_cc0(sonic)
    for path in tqdm(files, desc="Preparing ambient noise", unit="file"):
        if sf.info(str(path)).duration < MIN_NOISE_SECONDS:
            continue
        if path.stem not in cc0:
            continue
        wav, rate = _load_audio(path)
        uid = f"ambient_{path.stem}"
        add(
            "ambient",
            uid,
            to_16k(wav, rate),
            "sonic-pi-samples",
            str(path.relative_to(sonic)),
        )
    music = packages["fillets-ng-data"]
    files = sorted((music / _MUSIC_DIR).glob("*.ogg"))
    for path in tqdm(files, desc="Preparing music", unit="file"):
        wav, rate = _load_audio(path)
        add(
            "music",
            f"music_{path.stem}",
            to_16k(wav, rate),
            "fillets-ng-data",
            str(path.relative_to(music)),
        )
    nl_pkg = packages["fillets-ng-data-nl"]
    rng = np.random.default_rng(20240521)
    groups = _babble_groups(nl_pkg / _NL_DIR, rng)
    for index, levels in enumerate(tqdm(groups, desc="Making babble")):
        files = sorted(
            p for level in levels for p in (level / "nl").glob("*.ogg")
        )
        wav, used = make_babble(
            files, BABBLE_TALKERS, round(BABBLE_SECONDS * SAMPLE_RATE), rng
        )
        source = "+".join(sorted({str(p.relative_to(nl_pkg)) for p in used}))
        add("babble", f"babble_{index:02d}", wav, "fillets-ng-data-nl", source)
    save_clips(manifest, clips)
    return clips


# ----------------------------------------------------------------------------
# Fixtures and folders
# ----------------------------------------------------------------------------


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
    """Reads the committed fixtures (``samples.csv`` beside the files).

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
        info = sf.info(str(path))
        if info.samplerate != SAMPLE_RATE:
            wrong.append(f"{path} ({info.samplerate} Hz)")
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


def _banner(message):
    text = f"\n{_BANNER}\n{message}\n{_BANNER}\n"
    print(text, file=sys.stderr)


def load_sources(
    cache_dir=None,
    samples_dir=None,
    apt_get="apt-get",
    segment_seconds=2.0,
):
    """The clips for the mini data sets: Debian packages or fixtures.

    Arguments
    ---------
    cache_dir : str or pathlib.Path or None
        Cache of the Debian packages (default :data:`DEFAULT_CACHE`).
    samples_dir : str or pathlib.Path or None
        If given, the fixtures of this folder are used and nothing is
        fetched.
    apt_get : str
        The apt-get command.
    segment_seconds : float or None
        Segment length for the fixtures (see :func:`load_fixtures`).

    Returns
    -------
    SourceBank
        The speech and noise clips.
    """
    if samples_dir is not None:
        return load_fixtures(samples_dir, segment_seconds)
    try:
        speech = prepare_speech(cache_dir, apt_get)
        noise = prepare_noise(cache_dir, apt_get)
        return SourceBank(speech, noise, origin="debian")
    except SourcesUnavailable as err:
        message = (
            "WARNING: the Debian audio packages could not be fetched "
            f"({err}).\nFalling back to the few seconds of committed "
            f"fixtures in {DEFAULT_SAMPLES}: the data set built from them is "
            "TINY and only good for smoke tests."
        )
        logger.warning(message)
        _banner(message)
        bank = load_fixtures(DEFAULT_SAMPLES, segment_seconds)
        bank.fallback = True
        return bank
