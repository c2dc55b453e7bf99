#!/usr/bin/env python3
"""Does a model generalise? Voices, languages, noises and rooms never seen.

Issue 13 asks that the bundled model improve PESQ and SI-SDR over the noisy
input on recordings and noises it never saw. This tool builds such a test
set from Debian packages that MiniVB (docs/minidata.md) does not use,
enhances it with a model folder loaded by
:meth:`DiffusionEnhancement.from_hparams
<speechbrain_elbo.inference.DiffusionEnhancement.from_hparams>` (stage 1 and
stage 1+2 from the same stage-1 sample,
:meth:`~speechbrain_elbo.inference.DiffusionEnhancement.enhance_stages`) and
writes a table of PESQ-WB, ESTOI and SI-SDR: over all items, per voice and
per noise type.

    python tools/unseen_check.py [--task denoise|dereverb] [--model DIR]
        [--work DIR] [--out DIR]

Speech (:data:`VOICES`, G.722 prompts decoded by Debian's ffmpeg through
:func:`speechbrain_elbo.minidata.packages.decode_g722`): Spanish (es_MX,
Allison Smith: the English training voice, in another language), Canadian
French (June Wallack) and Russian (the female ``IvrvoiceRU`` voice, not the
festvox talker). Short prompts are joined into utterances of 2-5 s.

Noise (:data:`NOISE_TYPES`): traffic, crowd, machinery and water recorded
for the city game LinCity-NG (``lincity-ng-data``), alerts (alarm clock and
telephone rings of ``sound-theme-freedesktop``), and synthetic mains hum
(50 or 60 Hz with harmonics, :func:`mains_hum`). None is a MiniVB category
(ambient Sonic Pi samples, music, Dutch babble, white/pink/brown noise).

With ``--task dereverb`` (for a dereverberation model such as the bundled
``miniwhamr-small``) the same voices are reverberated instead, in simulated
rooms of the kinds MiniWHAMR never had (:data:`ROOM_TYPES`: a small dry
booth, a large reverberant hall, and a talker far from the microphone), by
MiniWHAMR's own simulation (:func:`speechbrain_elbo.minidata.acoustics.
simulate_room` and :func:`~speechbrain_elbo.minidata.acoustics.reverberate`:
pyroomacoustics' image method, the measured RT60 within 10 % of a target
drawn in the range, the target the direct path plus 2.5 ms), with the
reverberant speech at an active level drawn in -30..-20 dBFS as MiniWHAMR.
The table is then per voice and per room type, against the anechoic target.

Clean speech is set to an ITU-T P.56 active level drawn in -30..-20 dBFS,
and the noise to an SNR drawn uniformly in 0..15 dB relative to that active
level, with MiniVB's mixing
(:func:`speechbrain_elbo.minidata.signals.mix_at_snr`). Every random choice
comes from ``--seed``. The pairs are built once into ``WORK/pairs`` (with
``metadata.csv``: source package, file, licence and SNR of every item) and
reused while the options are the same.

The packages are fetched with ``apt-get download`` into the source cache of
:mod:`speechbrain_elbo.minidata` (``~/.cache/speechbrain_elbo/sources`` or
``$SPEECHBRAIN_ELBO_SOURCES``); no root rights are needed, only ffmpeg for
the G.722 prompts. Outputs (``--out``, default ``results/unseen_check``):
``unseen_check.md`` and ``unseen_check.csv`` (the table),
``per_item.csv`` and ``metadata.csv``, written atomically, with no absolute
path of this machine.

Example
-------
>>> rng = np.random.default_rng(0)
>>> speech = np.sin(np.arange(16000) / 5.0)
>>> clean, noisy, gain = mix_at_snr(speech, rng.standard_normal(16000),
...                                 snr_db=7.5, level_dbfs=-25.0)
>>> round(measured_snr(clean, noisy), 6)
7.5
"""

import argparse
import math
import os
import pathlib
import platform
import shlex
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from speechbrain_elbo.demo.cli import run_guarded
from speechbrain_elbo.fileio import (
    write_audio_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from speechbrain_elbo.metrics import estoi, nan_mean, pesq_wb, si_sdr
from speechbrain_elbo.minidata.acoustics import (
    RoomConfig,
    reverberate,
    simulate_room,
)
from speechbrain_elbo.minidata.folders import build_once
from speechbrain_elbo.minidata.packages import (
    SourcesUnavailable,
    decode_g722,
    ensure_ffmpeg,
    fetch_package,
)
from speechbrain_elbo.minidata.rooms import MAX_PEAK
from speechbrain_elbo.minidata.signals import (
    SAMPLE_RATE,
    active_speech_level,
    check_full_scale,
    fade_edges,
    load_audio,
    loop_to_length,
    mix_at_snr,
    power,
    seeded_rng,
    to_16k,
    trimmed,
)

PROG = "unseen_check"

#: Voice id -> (package, folder inside it, language, talker, licence).
VOICES = {
    "es_allison": (
        "asterisk-core-sounds-es-g722",
        "usr/share/asterisk/sounds/es_MX_f_Allison",
        "Spanish (es-MX)",
        "Allison Smith, female (the English MiniVB voice, other language)",
        "CC-BY-SA-3.0 (c) 2003-2010 Allison Smith",
    ),
    "fr_june": (
        "asterisk-core-sounds-fr-g722",
        "usr/share/asterisk/sounds/fr_CA_f_June",
        "French (fr-CA)",
        "June Wallack, female",
        "CC-BY-SA-3.0 (c) 2006-2008 June Wallack",
    ),
    "ru_ivrvoice": (
        "asterisk-core-sounds-ru-g722",
        "usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU",
        "Russian (ru-RU)",
        "IvrvoiceRU, female (not the festvox-ru talker)",
        "CC-BY-3.0 (c) 2010 Maxim",
    ),
}
#: Asterisk prompts that are tones, not speech.
NOT_SPEECH = {"beep", "beeperr", "ascending-2tone", "descending-2tone"}

_LINCITY = "usr/share/games/lincity-ng/sounds"
_LINCITY_LICENCE = "GPL-2+ (LinCity-NG sound effects)"
_FREEDESKTOP = "usr/share/sounds/freedesktop/stereo"
#: Noise type -> (package, folder, file stems, licence per file or one).
NOISE_TYPES = {
    "traffic": (
        "lincity-ng-data",
        _LINCITY,
        ["TraficHigh1", "TraficHigh2", "TraficHigh3", "TraficLow1"]
        + ["TraficLow2", "TraficLow3", "RailTrain1", "RailTrain2"]
        + ["RailTrain3"],
        _LINCITY_LICENCE,
    ),
    "crowd": (
        "lincity-ng-data",
        _LINCITY,
        ["SportsCroud1", "SportsCroud2", "SportsCroud3", "School1"]
        + ["School2", "School3", "MarketFull1", "MarketMed1"],
        _LINCITY_LICENCE,
    ),
    "machinery": (
        "lincity-ng-data",
        _LINCITY,
        ["IndustryHigh1", "IndustryHigh3", "IndustryLight1", "CoalMine2"]
        + ["OreMine1", "Mill1", "Blacksmith1", "Recycle1"],
        _LINCITY_LICENCE,
    ),
    "water": (
        "lincity-ng-data",
        _LINCITY,
        ["Water1", "Water2", "Water3", "Water4", "Water5", "Harbor1"]
        + ["Harbor2", "Harbor3", "ParklandLake1"],
        _LINCITY_LICENCE,
    ),
    "alerts": (
        "sound-theme-freedesktop",
        _FREEDESKTOP,
        ["alarm-clock-elapsed", "phone-incoming-call"]
        + ["phone-outgoing-busy", "phone-outgoing-calling"],
        {
            "alarm-clock-elapsed": "CC-BY-SA-3.0 (c) Tim/corsica_s",
            "phone-incoming-call": "GPL-2+ (c) Damien Sandras",
            "phone-outgoing-busy": "GPL-2+ (c) Damien Sandras",
            "phone-outgoing-calling": "GPL-2+ (c) Damien Sandras",
        },
    ),
    "hum": ("synthetic", "", [], "generated, no licence restriction"),
}

#: Room type -> (what it is, the RoomConfig of its rooms). MiniWHAMR's
#: rooms (docs/minidata.md): RT60 0.2-1.0 s, 4-10 m long and wide, 2.5-4 m
#: high, talker 0.7-2.5 m from the microphone; each type lies outside that.
ROOM_TYPES = {
    "booth": (
        "small dry booth: 2.2-3.5 m, RT60 0.08-0.18 s, talker 0.3-0.9 m",
        dict(
            rt60_range=(0.08, 0.18),
            length_range=(2.2, 3.5),
            height_range=(2.1, 2.5),
            distance_range=(0.3, 0.9),
        ),
    ),
    "hall": (
        "large hall: 12-20 m, 5-9 m high, RT60 1.2-1.8 s, talker 2.5-5 m",
        dict(
            rt60_range=(1.2, 1.8),
            length_range=(12.0, 20.0),
            height_range=(5.0, 9.0),
            distance_range=(2.5, 5.0),
        ),
    ),
    "far": (
        "talker far away: 8-12 m, RT60 0.5-1.0 s, talker 3.5-6 m",
        dict(
            rt60_range=(0.5, 1.0),
            length_range=(8.0, 12.0),
            distance_range=(3.5, 6.0),
        ),
    ),
}
#: The test conditions of each task: the metadata column, its label in the
#: table, and the pairs folder under --work.
TASKS = {
    "denoise": ("noise_type", "noise", "pairs"),
    "dereverb": ("room", "room", "rooms"),
}

#: Where the pairs are built by default (beside the source cache).
DEFAULT_WORK = pathlib.Path("~/.cache/speechbrain_elbo/unseen_check")
#: Outputs and bundled models of each task.
DEFAULT_OUTS = {
    "denoise": pathlib.Path("results") / "unseen_check",
    "dereverb": pathlib.Path("results") / "unseen_check_dereverb",
}
DEFAULT_MODELS = {"denoise": "minivb-small", "dereverb": "miniwhamr-small"}
#: Utterance length range in seconds, SNR range in dB, level range in dBFS.
SECONDS = (2.0, 5.0)
SNR_RANGE = (0.0, 15.0)
LEVEL_RANGE = (-30.0, -20.0)
#: Silence put between joined prompts (seconds).
GAP_SECONDS = 0.15
#: Metrics of the table, and the systems in the order of the columns.
METRICS = ("pesq", "estoi", "si_sdr")
SYSTEMS = ("noisy", "stage1", "stage1+2")
#: Bumped when the built pairs change for the same options.
BUILD_VERSION = 1


# ---------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------
def mains_hum(num_samples, rng, sample_rate=SAMPLE_RATE):
    """Synthetic mains hum: 50 or 60 Hz and its harmonics, unit power.

    The fundamental (50 or 60 Hz, drawn) is detuned by up to 0.5 %; the
    harmonics up to 2 kHz get amplitudes falling as ``k ** -a`` (``a`` drawn
    in 0.7..1.5, so buzzing or smooth), the odd ones boosted 2x (as rectified
    mains buzz is), random phases and a slow 5-15 % amplitude wobble.

    Arguments
    ---------
    num_samples : int
        Length.
    rng : numpy.random.Generator
        Source of every random choice.
    sample_rate : int
        Sample rate.

    Returns
    -------
    numpy.ndarray
        float32 hum of mean power 1.

    Example
    -------
    >>> x = mains_hum(16000, np.random.default_rng(0))
    >>> x.shape, round(float(np.mean(x ** 2)), 6)
    ((16000,), 1.0)
    >>> spectrum = np.abs(np.fft.rfft(x))
    >>> int(np.argmax(spectrum)) in range(49, 61)  # 1 Hz bins
    True
    """
    base = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.005, 0.005))
    slope = rng.uniform(0.7, 1.5)
    t = np.arange(num_samples) / sample_rate
    hum = np.zeros(num_samples)
    for k in range(1, int(2000 // base) + 1):
        amp = k**-slope * (2.0 if k % 2 else 1.0)
        hum += amp * np.sin(
            2 * np.pi * k * base * t + rng.uniform(0, 2 * np.pi)
        )
    depth = rng.uniform(0.05, 0.15)
    rate = rng.uniform(0.2, 1.0)
    hum *= 1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    hum -= hum.mean()
    return (hum / np.sqrt(np.mean(hum**2))).astype(np.float32)


def measured_snr(clean, noisy):
    """SNR of a pair: P.56 active level of ``clean`` over the noise power.

    Arguments
    ---------
    clean, noisy : array_like
        The pair (the noise is ``noisy - clean``).

    Returns
    -------
    float
        SNR in dB.
    """
    clean = np.asarray(clean, dtype=np.float64)
    noise = np.asarray(noisy, dtype=np.float64) - clean
    return 10 * math.log10(active_speech_level(clean)[0] / power(noise))


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------
def _prompt_files(root, folder):
    """The top-level speech prompts of one asterisk voice, sorted."""
    base = root / folder
    prompts = sorted(p for p in base.glob("*.g722") if p.stem not in NOT_SPEECH)
    if not prompts:
        raise SourcesUnavailable(f"No G.722 prompts in {folder}.")
    return prompts


def load_voices(cache_dir=None, voices=None):
    """Decoded, trimmed prompts of each voice, from the Debian packages.

    Arguments
    ---------
    cache_dir : str or pathlib.Path, optional
        Source cache (default that of :mod:`speechbrain_elbo.minidata`).
    voices : list of str, optional
        Voice ids of :data:`VOICES` (default all).

    Returns
    -------
    dict
        Voice id -> list of ``(path inside the package, waveform)``.

    Raises
    ------
    SourcesUnavailable
        If a package cannot be fetched or ffmpeg is missing.
    """
    ffmpeg = ensure_ffmpeg(install=False)
    out = {}
    for voice in voices or VOICES:
        package, folder = VOICES[voice][:2]
        root = fetch_package(package, cache_dir)
        prompts = _prompt_files(root, folder)
        with tempfile.TemporaryDirectory(prefix="unseen-g722-") as tmp:
            wavs = [
                pathlib.Path(tmp) / f"{i:05d}.wav" for i in range(len(prompts))
            ]
            decode_g722(prompts, wavs, ffmpeg=ffmpeg)
            items = []
            for prompt, wav_path in zip(prompts, wavs, strict=True):
                wav, rate = load_audio(wav_path)
                wav = trimmed(to_16k(wav, rate))
                if wav.size >= 0.3 * SAMPLE_RATE:
                    rel = str(prompt.relative_to(root))
                    items.append((rel, fade_edges(wav)))
        out[voice] = items
    return out


def load_noises(cache_dir=None, types=None):
    """The recorded noise files of each type, at 16 kHz.

    Arguments
    ---------
    cache_dir : str or pathlib.Path, optional
        Source cache (default that of :mod:`speechbrain_elbo.minidata`).
    types : list of str, optional
        Types of :data:`NOISE_TYPES` (default all); the synthetic ``hum``
        has no files.

    Returns
    -------
    dict
        Type -> list of ``(package, path inside it, licence, waveform)``.
    """
    out = {}
    for kind in types or NOISE_TYPES:
        package, folder, stems, licence = NOISE_TYPES[kind]
        if package == "synthetic":
            out[kind] = []
            continue
        root = fetch_package(package, cache_dir)
        files = []
        for stem in stems:
            matches = sorted((root / folder).glob(f"{stem}.*"))
            if not matches:
                raise SourcesUnavailable(f"{folder}/{stem}.* is missing.")
            wav, rate = load_audio(matches[0])
            rights = licence[stem] if isinstance(licence, dict) else licence
            rel = str(matches[0].relative_to(root))
            files.append((package, rel, rights, to_16k(wav, rate)))
        out[kind] = files
    return out


def utterances(prompts, count, rng, seconds=SECONDS):
    """Joins short prompts of one voice into ``count`` utterances.

    The prompts are taken in a random order, each at most once; an
    utterance collects prompts (0.15 s apart) until it reaches a length
    drawn in ``seconds``, and never exceeds ``seconds[1]`` (a prompt that
    would make it too long is left for a later one).

    Arguments
    ---------
    prompts : list of (str, numpy.ndarray)
        Name and trimmed waveform of each prompt.
    count : int
        Utterances wanted.
    rng : numpy.random.Generator
        Chooses the order and the lengths.
    seconds : tuple of float
        Shortest and longest utterance.

    Returns
    -------
    list of (list of str, numpy.ndarray)
        The prompts used and the waveform of each utterance.

    Raises
    ------
    ValueError
        If the prompts do not make ``count`` utterances.
    """
    low, high = (round(s * SAMPLE_RATE) for s in seconds)
    gap = np.zeros(round(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pool = [prompts[i] for i in rng.permutation(len(prompts))]
    pool = [p for p in pool if p[1].size <= high]
    out = []
    while len(out) < count and pool:
        goal = int(rng.integers(low, high + 1))
        names, parts, length = [], [], 0
        for item in list(pool):
            extra = item[1].size + (gap.size if parts else 0)
            if length + extra > high:
                continue
            pool.remove(item)
            names.append(item[0])
            parts += [gap, item[1]] if parts else [item[1]]
            length += extra
            if length >= goal:
                break
        if length < low:
            break
        out.append((names, np.concatenate(parts)))
    if len(out) < count:
        raise ValueError(
            f"Only {len(out)} utterances of {seconds[0]}-{seconds[1]} s could "
            f"be made from {len(prompts)} prompts; {count} were wanted."
        )
    return out


def noise_excerpt(kind, files, num_samples, rng):
    """A noise excerpt of one type, and where it came from.

    Arguments
    ---------
    kind : str
        The noise type (``"hum"`` is synthetic).
    files : list of (str, str, str, numpy.ndarray)
        Package, path, licence and waveform of each file of the type.
    num_samples : int
        Length wanted.
    rng : numpy.random.Generator
        Chooses the file and the offset (files are looped when short).

    Returns
    -------
    noise : numpy.ndarray
        The excerpt.
    info : dict
        ``noise_package``, ``noise_file``, ``noise_licence``,
        ``noise_offset_s``.
    """
    if not files:
        return mains_hum(num_samples, rng), {
            "noise_package": "synthetic",
            "noise_file": kind,
            "noise_licence": NOISE_TYPES.get(kind, ("", "", "", ""))[3],
            "noise_offset_s": 0.0,
        }
    package, path, licence, wav = files[int(rng.integers(len(files)))]
    excerpt, offset = loop_to_length(wav, num_samples, rng)
    return excerpt, {
        "noise_package": package,
        "noise_file": path,
        "noise_licence": licence,
        "noise_offset_s": round(offset / SAMPLE_RATE, 4),
    }


def make_items(
    voices, noises, seed=0, per_cell=3, snr_range=SNR_RANGE, seconds=SECONDS
):
    """Noisy/clean pairs: every voice with every noise type.

    Arguments
    ---------
    voices : dict
        Voice id -> prompts (:func:`load_voices`).
    noises : dict
        Noise type -> files (:func:`load_noises`).
    seed : int
        Seed of every random choice.
    per_cell : int
        Items per (voice, noise type).
    snr_range : tuple of float
        SNRs are drawn uniformly in this range (dB).
    seconds : tuple of float
        Shortest and longest utterance (:func:`utterances`).

    Returns
    -------
    list of (dict, numpy.ndarray, numpy.ndarray)
        Metadata row, clean and noisy waveform (float64) of each item.
    """
    items = []
    kinds = list(noises)
    for voice, prompts in voices.items():
        rng = seeded_rng(seed, "speech", voice)
        spoken = utterances(prompts, per_cell * len(kinds), rng, seconds)
        for index, (names, speech) in enumerate(spoken):
            kind = kinds[index % len(kinds)]
            uid = f"{voice}_{kind}_{index // len(kinds)}"
            rng = seeded_rng(seed, "item", uid)
            snr = round(float(rng.uniform(*snr_range)), 2)
            level = round(float(rng.uniform(*LEVEL_RANGE)), 2)
            noise, info = noise_excerpt(kind, noises[kind], speech.size, rng)
            clean, noisy, gain = mix_at_snr(speech, noise, snr, level)
            meta = VOICES.get(voice, ("", "", "", "", ""))
            row = {
                "id": uid,
                "voice": voice,
                "language": meta[2],
                "speech_package": meta[0],
                "speech_files": "+".join(names),
                "speech_licence": meta[4],
                "noise_type": kind,
                **info,
                "snr_db": snr,
                "level_dbfs": round(level + 20 * math.log10(gain), 3),
                "duration_s": round(speech.size / SAMPLE_RATE, 4),
            }
            items.append((row, clean, noisy))
    return items


def make_room_items(voices, seed=0, per_cell=3, seconds=SECONDS):
    """Reverberant/anechoic pairs: every voice in every room type.

    Arguments
    ---------
    voices : dict
        Voice id -> prompts (:func:`load_voices`).
    seed : int
        Seed of every random choice.
    per_cell : int
        Items per (voice, room type); each item is a new room.
    seconds : tuple of float
        Shortest and longest utterance (:func:`utterances`).

    Returns
    -------
    list of (dict, numpy.ndarray, numpy.ndarray)
        Metadata row (with the room's measured RT60 and DRR), anechoic
        target and reverberant waveform (float64) of each item.
    """
    items = []
    kinds = list(ROOM_TYPES)
    for voice, prompts in voices.items():
        rng = seeded_rng(seed, "speech", voice)
        spoken = utterances(prompts, per_cell * len(kinds), rng, seconds)
        for index, (names, speech) in enumerate(spoken):
            kind = kinds[index % len(kinds)]
            uid = f"{voice}_{kind}_{index // len(kinds)}"
            rng = seeded_rng(seed, "room", uid)
            room = simulate_room(RoomConfig(**ROOM_TYPES[kind][1]), rng)
            reverb, anechoic = reverberate(speech, room)
            level = round(float(rng.uniform(*LEVEL_RANGE)), 2)
            # the reverberant speech at the drawn active level, scaled down
            # (level and all) if a peak would clip, as MiniWHAMR is built
            gain = math.sqrt(
                10 ** (level / 10) / active_speech_level(reverb)[0]
            )
            peak = gain * max(np.max(np.abs(reverb)), np.max(np.abs(anechoic)))
            rescale = min(1.0, MAX_PEAK / peak)
            gain *= rescale
            meta = VOICES.get(voice, ("", "", "", "", ""))
            geometry = room.metadata()
            row = {
                "id": uid,
                "voice": voice,
                "language": meta[2],
                "speech_package": meta[0],
                "speech_files": "+".join(names),
                "speech_licence": meta[4],
                "room": kind,
                "rt60": geometry["rt60"],
                "drr": geometry["drr"],
                "room_x": round(room.room[0], 2),
                "room_y": round(room.room[1], 2),
                "room_z": round(room.room[2], 2),
                "distance_m": geometry["distance_m"],
                "level_dbfs": round(level + 20 * math.log10(rescale), 3),
                "duration_s": round(speech.size / SAMPLE_RATE, 4),
            }
            items.append((row, anechoic * gain, reverb * gain))
    return items


def write_pairs(folder, items):
    """Writes ``clean/<id>.wav``, ``noisy/<id>.wav`` and ``metadata.csv``.

    The audio is 32-bit float WAV, so the SNR of the files is the recorded
    one.

    Arguments
    ---------
    folder : pathlib.Path
        Where to write.
    items : list of (dict, numpy.ndarray, numpy.ndarray)
        From :func:`make_items`.
    """
    folder = pathlib.Path(folder)
    for row, clean, noisy in items:
        for name, signal in (("clean", clean), ("noisy", noisy)):
            path = folder / name / f"{row['id']}.wav"
            check_full_scale(signal, path)
            write_audio_atomic(path, signal, SAMPLE_RATE)
    write_csv_atomic(folder / "metadata.csv", [row for row, _, _ in items])


def build_pairs(
    work_dir,
    cache_dir=None,
    seed=0,
    per_cell=3,
    overwrite=False,
    task="denoise",
):
    """Builds the test pairs into ``work_dir`` once per set of options.

    Arguments
    ---------
    work_dir : str or pathlib.Path
        The work folder (the pairs go to ``pairs/``, or ``rooms/`` for
        ``dereverb``).
    cache_dir : str or pathlib.Path, optional
        Source cache of :mod:`speechbrain_elbo.minidata`.
    seed : int
        Seed of every random choice.
    per_cell : int
        Items per (voice, noise type or room type).
    overwrite : bool
        Rebuild a folder built with other options.
    task : str
        ``denoise`` (noisy/clean pairs) or ``dereverb`` (reverberant/
        anechoic pairs).

    Returns
    -------
    pathlib.Path
        The folder of the pairs (``noisy/`` holds the input, ``clean/`` the
        target).
    """
    target = pathlib.Path(work_dir).expanduser() / TASKS[task][2]
    options = {
        "version": BUILD_VERSION,
        "seed": seed,
        "per_cell": per_cell,
        "voices": list(VOICES),
        "seconds": SECONDS,
    }
    if task == "dereverb":
        options["rooms"] = {k: v[1] for k, v in ROOM_TYPES.items()}
    else:
        options.update(noise_types=list(NOISE_TYPES), snr_range=SNR_RANGE)

    def build(tmp):
        voices = load_voices(cache_dir)
        if task == "dereverb":
            items = make_room_items(voices, seed, per_cell)
        else:
            items = make_items(voices, load_noises(cache_dir), seed, per_cell)
        write_pairs(tmp, items)

    build_once(target, options, build, overwrite=overwrite)
    return target


def read_pairs(folder):
    """The metadata rows and waveforms of a folder of pairs.

    Arguments
    ---------
    folder : pathlib.Path
        Written by :func:`write_pairs`.

    Returns
    -------
    list of (dict, numpy.ndarray, numpy.ndarray)
        Row, clean and noisy (float32).
    """
    import csv

    with open(pathlib.Path(folder) / "metadata.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        clean, _ = sf.read(
            folder / "clean" / f"{row['id']}.wav", dtype="float32"
        )
        noisy, _ = sf.read(
            folder / "noisy" / f"{row['id']}.wav", dtype="float32"
        )
        out.append((row, clean, noisy))
    return out


# ---------------------------------------------------------------------------
# Enhancement and scores
# ---------------------------------------------------------------------------
def scores(estimate, clean):
    """PESQ-WB, ESTOI and SI-SDR of one estimate (:mod:`~.metrics`)."""
    estimate = torch.as_tensor(np.asarray(estimate, dtype=np.float32))
    clean = torch.as_tensor(np.asarray(clean, dtype=np.float32))
    return {
        "pesq": pesq_wb(estimate, clean, SAMPLE_RATE),
        "estoi": estoi(estimate, clean, SAMPLE_RATE),
        "si_sdr": float(si_sdr(estimate, clean)[0]),
    }


def load_model(model_dir):
    """The model of a folder, through ``DiffusionEnhancement.from_hparams``.

    Arguments
    ---------
    model_dir : str or pathlib.Path
        An exported model folder.

    Returns
    -------
    speechbrain_elbo.inference.DiffusionEnhancement
    """
    from speechbrain_elbo.inference import DiffusionEnhancement

    model_dir = pathlib.Path(model_dir).expanduser()
    if not (model_dir / "hyperparams.yaml").is_file():
        raise FileNotFoundError(
            f"--model {model_dir}: not a model folder (no hyperparams.yaml); "
            "give a folder written by export_enhancer, e.g. "
            "speechbrain_elbo/pretrained/minivb-small."
        )
    return DiffusionEnhancement.from_hparams(
        source=str(model_dir), run_opts={"device": "cpu"}
    )


def enhance_items(enhancer, items, seed=0, sampler=None, steps=None, log=None):
    """Scores of the noisy input, stage 1 and stage 1+2 of every item.

    Item k is enhanced with :meth:`enhance_stages` seeded with ``seed + k``:
    stage 1+2 is the refiner applied to the same stage-1 sample.

    Arguments
    ---------
    enhancer : speechbrain_elbo.inference.DiffusionEnhancement
        The model.
    items : list of (dict, numpy.ndarray, numpy.ndarray)
        Row, clean and noisy of each item.
    seed : int
        Base seed.
    sampler : str, optional
        Sampler name (default the model's).
    steps : int, optional
        Sampler steps (default the model's).
    log : callable, optional
        Called with a progress line per item.

    Returns
    -------
    list of dict
        Per item: ``id``, ``voice``, ``noise_type`` and ``snr_db`` (or
        ``room``, ``rt60`` and ``drr``), ``duration_s`` and
        ``<system>_<metric>`` for each system ("noisy": the input).
    """
    rows = []
    for k, (meta, clean, noisy) in enumerate(items):
        out = enhancer.enhance_stages(
            torch.as_tensor(np.asarray(noisy, dtype=np.float32)),
            sampler=sampler,
            steps=steps,
            seed=seed + k,
        )
        keys = ("id", "voice", "noise_type", "room", "snr_db", "rt60", "drr")
        row = {key: meta[key] for key in (*keys, "duration_s") if key in meta}
        systems = {"noisy": noisy, **{s: out[s] for s in SYSTEMS if s in out}}
        for system, estimate in systems.items():
            for metric, value in scores(estimate, clean).items():
                row[f"{system}_{metric}"] = value
        rows.append(row)
        if log:
            log(
                f"[{k + 1}/{len(items)}] {row['id']}: SI-SDR "
                + " / ".join(f"{row[f'{s}_si_sdr']:.2f}" for s in systems if s)
                + " dB"
            )
    return rows


def _beats(rows, system, metric):
    pairs = [
        (r[f"{system}_{metric}"], r[f"noisy_{metric}"])
        for r in rows
        if math.isfinite(r[f"{system}_{metric}"])
        and math.isfinite(r[f"noisy_{metric}"])
    ]
    return sum(a > b for a, b in pairs) / len(pairs) if pairs else float("nan")


def summarise(rows):
    """The table: all items, then per voice, then per noise or room type.

    Arguments
    ---------
    rows : list of dict
        From :func:`enhance_items`.

    Returns
    -------
    list of dict
        ``group`` (``all``, ``voice:<id>``, ``noise:<type>`` or
        ``room:<type>``), ``items``,
        the mean of each ``<system>_<metric>`` present (NaN PESQ left out)
        and ``final_beats_noisy_pesq`` / ``final_beats_noisy_si_sdr``: the
        fraction of items where the last system (stage 1+2, or stage 1
        without a refiner) is above the noisy input.
    """
    systems = [s for s in SYSTEMS if rows and f"{s}_pesq" in rows[0]]
    final = systems[-1]
    groups = [("all", rows)]
    fields = [("voice", "voice")]
    fields += [
        task[:2] for task in TASKS.values() if rows and task[0] in rows[0]
    ]
    for field, label in fields:
        for value in dict.fromkeys(r[field] for r in rows):
            groups.append(
                (f"{label}:{value}", [r for r in rows if r[field] == value])
            )
    table = []
    for name, members in groups:
        line = {"group": name, "items": len(members), "final": final}
        for system in systems:
            for metric in METRICS:
                key = f"{system}_{metric}"
                line[key] = nan_mean([r[key] for r in members])
        for metric in ("pesq", "si_sdr"):
            line[f"final_beats_noisy_{metric}"] = _beats(members, final, metric)
        table.append(line)
    return table


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def portable(path):
    """A path as written in reports: relative to the working folder or
    ``~``, otherwise its name alone (no absolute path of this machine).

    Example
    -------
    >>> portable(pathlib.Path.home() / "x" / "y")
    '~/x/y'
    >>> portable("/no/such/place/model")
    'model'
    """
    path = pathlib.Path(path).expanduser().absolute()
    for base, prefix in ((pathlib.Path.cwd(), ""), (pathlib.Path.home(), "~/")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            continue
    return path.name


def command_line(args, defaults):
    """The command that repeats a run, with its non-default options.

    Arguments
    ---------
    args : argparse.Namespace
        The parsed options.
    defaults : argparse.Namespace
        The defaults of the parser.

    Returns
    -------
    str
        ``python tools/unseen_check.py ...`` with portable paths.
    """
    parts = ["python", "tools/unseen_check.py"]
    for key, value in vars(args).items():
        if key == "debug" or value == getattr(defaults, key):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag)
            continue
        if key in ("model", "work", "out", "cache_dir"):
            value = portable(value)
        parts += [flag, str(value)]
    return shlex.join(parts)


def model_description(model_dir, enhancer):
    """Name, stages, sampler and checkpoint checksums of the model."""
    checksums = dict(vars(enhancer.hparams).get("checksums") or {})
    sampler = enhancer.default_sampler
    return {
        "name": pathlib.Path(model_dir).expanduser().resolve().name,
        "refiner": enhancer.has_refiner,
        "score_sha256": checksums.get("score_model.ckpt", "unknown"),
        "refiner_sha256": checksums.get("refiner.ckpt", "none"),
        "sampler": f"{sampler.name}:{sampler.steps}",
    }


def machine_description():
    """CPU model, core count, architecture, torch version and threads."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPU cores, {platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"
    )


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def render_markdown(table, info):
    """The Markdown report: header, the table, the verdict.

    Arguments
    ---------
    table : list of dict
        From :func:`summarise`.
    info : dict
        ``command``, ``date``, ``machine``, ``model`` (from
        :func:`model_description`), ``sampler``, ``seed``, ``seconds``.

    Returns
    -------
    str
    """
    model = info["model"]
    systems = [s for s in SYSTEMS if f"{s}_pesq" in table[0]]
    final = table[0]["final"]
    rooms = info.get("task") == "dereverb"
    source = "reverb" if rooms else "noisy"
    names = {"noisy": source, "stage1": "s1", "stage1+2": "s1+2"}
    if rooms:
        conditions = "; room types " + ", ".join(
            f"{key} ({ROOM_TYPES[key][0]})"
            for key in ROOM_TYPES
            if any(t["group"] == f"room:{key}" for t in table)
        )
    else:
        conditions = (
            "; noise types "
            + ", ".join(
                t["group"][6:] for t in table if t["group"].startswith("noise:")
            )
            + f"; SNR {SNR_RANGE[0]:g}-{SNR_RANGE[1]:g} dB"
        )
    lines = [
        "# Voices and rooms the model never saw"
        if rooms
        else "# Recordings and noises the model never saw",
        "",
        f"- **Command**: `{info['command']}`",
        f"- **Date**: {info['date']}",
        f"- **Machine**: {info['machine']}",
        f"- **Model**: `{model['name']}` (refiner: "
        + (
            f"`refiner.ckpt` sha256 `{model['refiner_sha256']}`"
            if model["refiner"]
            else "none"
        )
        + f"; score model sha256 `{model['score_sha256']}`)",
        f"- **Sampler**: {info['sampler']}, seed {info['seed']} (item k: "
        "seed + k), stage 1 and stage 1+2 from the same sample "
        "(`enhance_stages`)",
        f"- **Data**: {table[0]['items']} items; voices "
        + ", ".join(
            f"{key} ({VOICES[key][2]}, {VOICES[key][3]})"
            for key in VOICES
            if any(t["group"] == f"voice:{key}" for t in table)
        )
        + conditions,
        f"- **Wall time**: {info['seconds']:.0f} s",
        "",
    ]
    header = ["group", "items"]
    for label in ("PESQ", "ESTOI", "SI-SDR"):
        header += [f"{label} {names[s]}" for s in systems]
    header += [
        f"{names[final]} > {source} PESQ",
        f"{names[final]} > {source} SI-SDR",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in table:
        cells = [line["group"], str(line["items"])]
        for metric in METRICS:
            digits = 2 if metric == "si_sdr" else 3
            cells += [_fmt(line[f"{s}_{metric}"], digits) for s in systems]
        for metric in ("pesq", "si_sdr"):
            cells.append(_fmt(line[f"final_beats_noisy_{metric}"], 2))
        lines.append("| " + " | ".join(cells) + " |")
    overall = table[0]
    verdict = []
    for metric, label in (("pesq", "PESQ"), ("si_sdr", "SI-SDR")):
        gain = overall[f"{final}_{metric}"] - overall[f"noisy_{metric}"]
        word = "improved" if gain > 0 else "did NOT improve"
        verdict.append(f"{label} {word} ({gain:+.3f})")
    lines += [
        "",
        f"Over all items, {names[final]} " + "; ".join(verdict) + " over the "
        f"{source} input. SI-SDR in dB; fractions are of items where "
        f"{names[final]} is above the {source} input.",
        "",
    ]
    return "\n".join(lines)


def run(args, defaults, log=print):
    """Builds the pairs, enhances them and writes the report.

    Arguments
    ---------
    args : argparse.Namespace
        Options of :func:`build_parser`.
    defaults : argparse.Namespace
        The parser's defaults (for the repeat command).
    log : callable
        Where progress lines go.

    Returns
    -------
    list of dict
        The table (:func:`summarise`).
    """
    from speechbrain_elbo.pretrained import pretrained_path

    start = time.time()
    torch.set_num_threads(args.threads)
    model = args.model or pretrained_path(DEFAULT_MODELS[args.task])
    enhancer = load_model(model)
    try:
        pairs = build_pairs(
            args.work, args.cache_dir, args.seed, args.per_cell, task=args.task
        )
    except SourcesUnavailable as error:
        raise SourcesUnavailable(
            f"{error} (the test set needs apt-get download and Debian's "
            "ffmpeg for the G.722 prompts: apt-get install ffmpeg)"
        ) from None
    items = read_pairs(pairs)
    if args.items:
        items = items[: args.items]
    rows = enhance_items(
        enhancer, items, args.seed, args.sampler, args.steps, log=log
    )
    table = summarise(rows)
    sampler = enhancer.make_sampler(args.sampler, args.steps)
    info = {
        "command": command_line(args, defaults),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_description(),
        "model": model_description(model, enhancer),
        "task": args.task,
        "sampler": f"{sampler.name} with {sampler.steps} steps",
        "seed": args.seed,
        "seconds": time.time() - start,
    }
    text = render_markdown(table, info)
    out = pathlib.Path(args.out or DEFAULT_OUTS[args.task])
    write_text_atomic(out / "unseen_check.md", text)
    write_csv_atomic(out / "unseen_check.csv", table, float_digits=4)
    write_csv_atomic(out / "per_item.csv", rows, float_digits=4)
    write_csv_atomic(out / "metadata.csv", [row for row, _, _ in items])
    log(text)
    return table


def build_parser():
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Enhance speech and noise MiniVB never had (other "
        "voices, languages and noise types), or with --task dereverb those "
        "voices in rooms MiniWHAMR never had, and tabulate PESQ-WB, ESTOI "
        "and SI-SDR of the input / stage 1 / stage 1+2.",
    )
    parser.add_argument(
        "--task",
        choices=tuple(TASKS),
        default="denoise",
        help="denoise: noisy mixtures (default); dereverb: reverberant "
        "speech in unseen room types",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="exported model folder (default: the bundled minivb-small, "
        "or miniwhamr-small with --task dereverb)",
    )
    parser.add_argument(
        "--work",
        default=str(DEFAULT_WORK),
        help="where the pairs are built once (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"where the tables go (default {DEFAULT_OUTS['denoise']}, or "
        f"{DEFAULT_OUTS['dereverb']} with --task dereverb)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="source cache of the Debian packages (default "
        "~/.cache/speechbrain_elbo/sources or $SPEECHBRAIN_ELBO_SOURCES)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--per-cell",
        type=int,
        default=3,
        help="items per (voice, noise type): 3 voices x 6 types x 3 = 54",
    )
    parser.add_argument(
        "--items", type=int, default=0, help="use only the first N (0: all)"
    )
    parser.add_argument("--sampler", default=None, help="default: the model's")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def main(argv=None):
    """``python tools/unseen_check.py``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = parser.parse_args([])
    _, status = run_guarded(PROG, lambda: run(args, defaults), debug=args.debug)
    return status


if __name__ == "__main__":
    sys.exit(main())
