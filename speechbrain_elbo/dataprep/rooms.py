"""Room simulation: clean 16 kHz speech to the WHAMR! layout.

For users without WHAMR! (and for MiniWHAMR), this module reverberates any
folder of clean speech in simulated shoebox rooms (pyroomacoustics, image
method, as WHAMR! did) and optionally adds noise:

- ``s1_reverb``: speech convolved with the room impulse response (RIR);
- ``s1_anechoic``: the dereverberation target, speech convolved with the
  direct path of the same RIR plus whatever arrives in the following
  ``direct_ms`` = 2.5 ms (faded out over a further 1 ms). It has the same
  delay and length as ``s1_reverb``, so the two are aligned sample by
  sample, as WHAMR!'s ``s1_anechoic``;
- ``noise``: the scaled noise, and ``mix_single_reverb`` = ``s1_reverb`` +
  ``noise``.

The RT60 of each RIR is measured (Schroeder backward integration, T30) and
the absorption is adjusted until the measured value lies within 10 % of the
drawn target and inside the configured range (the RT60 that Sabine's
formula promises is typically missed by 10-60 %). The measured RT60 and the
direct-to-reverberant ratio (DRR) go into ``metadata/<split>.csv``.

Command line::

    python -m speechbrain_elbo.dataprep.rooms --speech CLEAN_DIR --out OUT \\
        [--noise NOISE_DIR] [--split tt] [--seed 0] [--rt60 0.2 1.0]
"""

import argparse
import json
import re
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
from scipy.signal import fftconvolve
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_elbo.dataprep.sources import (
    SAMPLE_RATE,
    STAMP_NAME,
    active_speech_level,
    choose_noise,
    clips_from_folder,
    scale_to_snr,
    write_csv_atomic,
    write_wav_atomic,
)

logger = get_logger(__name__)

#: WHAMR! sub-folders written for each split.
WHAMR_FOLDERS = ("s1_anechoic", "s1_reverb", "mix_single_reverb", "noise")

#: Peak that no written signal exceeds (a common gain is applied).
MAX_PEAK = 0.99


@dataclass
class RoomConfig:
    """Distribution of the simulated rooms.

    Arguments
    ---------
    rt60_range : tuple of float
        Range of the measured RT60 in seconds.
    length_range : tuple of float
        Range of the room's length and width in metres.
    height_range : tuple of float
        Range of the room's height in metres.
    mic_height_range : tuple of float
        Range of the microphone height.
    source_height_range : tuple of float
        Range of the talker's mouth height.
    distance_range : tuple of float
        Range of the horizontal talker-microphone distance.
    wall_margin : float
        Minimum distance of talker and microphone from any wall.
    max_order : int
        Cap on the image-source order (bounds the cost; 40 keeps an RIR of
        RT60 = 1 s under 0.1 s of CPU).
    direct_ms : float
        The target keeps the RIR up to this long after the direct path.
    fade_ms : float
        ... and then fades it out over this long.
    rt60_tolerance : float
        Accepted relative error of the measured RT60 against the target.
    max_iterations : int
        Absorption adjustments per room before another room is drawn.
    sample_rate : int
        Sample rate of the RIRs.

    Example
    -------
    >>> RoomConfig(rt60_range=(0.3, 0.6)).rt60_range
    (0.3, 0.6)
    >>> RoomConfig(rt60_range=(0.6, 0.3))
    Traceback (most recent call last):
    ...
    ValueError: rt60_range must be (low, high) with 0 < low <= high...
    """

    rt60_range: tuple = (0.2, 1.0)
    length_range: tuple = (4.0, 10.0)
    height_range: tuple = (2.5, 4.0)
    mic_height_range: tuple = (1.0, 1.6)
    source_height_range: tuple = (1.4, 1.9)
    distance_range: tuple = (0.7, 2.5)
    wall_margin: float = 0.5
    max_order: int = 40
    direct_ms: float = 2.5
    fade_ms: float = 1.0
    rt60_tolerance: float = 0.1
    max_iterations: int = 5
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self):
        for name in (
            "rt60_range",
            "length_range",
            "height_range",
            "mic_height_range",
            "source_height_range",
            "distance_range",
        ):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(
                    f"{name} must be (low, high) with 0 < low <= high, got "
                    f"{getattr(self, name)}."
                )
            setattr(self, name, (float(low), float(high)))
        if self.length_range[0] < 2 * self.wall_margin + 0.1:
            raise ValueError(
                "length_range is too small for wall_margin: rooms must be "
                "longer than twice the wall margin."
            )
        if self.distance_range[1] > self.length_range[0] - 2 * self.wall_margin:
            raise ValueError(
                f"distance_range {self.distance_range} does not fit in the "
                f"smallest room ({self.length_range[0]} m minus the wall "
                "margins); lower it or enlarge length_range."
            )


@dataclass
class RoomResponse:
    """A simulated RIR, its target part and its measurements.

    Arguments
    ---------
    rir : numpy.ndarray
        The reverberant RIR.
    target : numpy.ndarray
        Direct path plus ``direct_ms`` of the RIR (same length and delay).
    rt60 : float
        Measured RT60 (T30) in seconds.
    rt60_target : float
        The RT60 that was aimed at.
    drr : float
        Direct-to-reverberant ratio in dB (energy of ``target`` over the rest).
    room : tuple of float
        Room dimensions (x, y, z) in metres.
    source : tuple of float
        Talker position.
    mic : tuple of float
        Microphone position.
    absorption : float
        Energy absorption coefficient of the walls.
    max_order : int
        Image-source order used.
    direct_index : int
        Sample index of the direct path in the RIR.
    """

    rir: np.ndarray
    target: np.ndarray
    rt60: float
    rt60_target: float
    drr: float
    room: tuple
    source: tuple
    mic: tuple
    absorption: float
    max_order: int
    direct_index: int

    def metadata(self):
        """The measurements and geometry as a flat dict (for the CSV).

        Returns
        -------
        dict
            Rounded values.
        """
        row = {
            "rt60": round(self.rt60, 4),
            "rt60_target": round(self.rt60_target, 4),
            "drr": round(self.drr, 3),
            "absorption": round(self.absorption, 5),
            "max_order": self.max_order,
            "direct_delay": self.direct_index,
            "distance_m": round(
                float(np.linalg.norm(np.subtract(self.source, self.mic))), 3
            ),
        }
        for prefix, point in (
            ("room", self.room),
            ("source", self.source),
            ("mic", self.mic),
        ):
            for axis, value in zip("xyz", point, strict=True):
                row[f"{prefix}_{axis}"] = round(float(value), 3)
        return row


def measure_rt60(rir, sample_rate=SAMPLE_RATE, decay_db=30.0):
    """RT60 of an impulse response by Schroeder backward integration.

    The energy decay curve (EDC) is integrated backwards from the end; a
    straight line is fitted to it (least squares) between -5 dB and
    ``-5 - decay_db`` dB, and its slope extrapolated to 60 dB.

    Arguments
    ---------
    rir : array_like
        The impulse response.
    sample_rate : int
        Its sample rate.
    decay_db : float
        Range of the fit (30: T30, 20: T20).

    Returns
    -------
    float
        RT60 in seconds.

    Raises
    ------
    ValueError
        If the EDC does not decay by ``5 + decay_db`` dB.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> t = np.arange(16000) / 16000
    >>> rir = rng.standard_normal(t.size) * 10 ** (-3 * t / 0.5)
    >>> round(measure_rt60(rir), 2)
    0.5
    """
    h = np.asarray(rir, dtype=np.float64).reshape(-1)
    energy = np.cumsum((h * h)[::-1])[::-1]
    if energy.size == 0 or energy[0] <= 0:
        raise ValueError("The impulse response is silent; no RT60.")
    edc = 10 * np.log10(np.maximum(energy / energy[0], 1e-300))
    start = int(np.argmax(edc <= -5.0))
    below = edc <= -5.0 - decay_db
    if not below.any():
        raise ValueError(
            f"The energy decay curve falls by only {-edc[-1]:.1f} dB, less "
            f"than the {5 + decay_db:.0f} dB needed; use a longer impulse "
            "response or a smaller decay_db."
        )
    stop = int(np.argmax(below))
    t = np.arange(start, stop + 1) / sample_rate
    slope = np.polyfit(t, edc[start : stop + 1], 1)[0]
    return float(-60.0 / slope)


def target_window(rir, direct_index, sample_rate, direct_ms, fade_ms):
    """The weights that cut the target part out of an RIR.

    Arguments
    ---------
    rir : numpy.ndarray
        The RIR (only its length is used).
    direct_index : int
        Sample of the direct path.
    sample_rate : int
        Sample rate.
    direct_ms : float
        Kept length after the direct path, in ms.
    fade_ms : float
        Length of the raised-cosine fade-out after that, in ms.

    Returns
    -------
    numpy.ndarray
        Weights: 1 up to ``direct_index + direct_ms``, a fade, then 0.

    Example
    -------
    >>> target_window(np.zeros(8), 2, 1000, 2.0, 2.0).round(2)
    array([1.  , 1.  , 1.  , 1.  , 1.  , 0.85, 0.15, 0.  ])
    """
    keep = direct_index + round(direct_ms * sample_rate / 1000) + 1
    fade = round(fade_ms * sample_rate / 1000)
    window = np.zeros(len(rir))
    window[: min(keep, len(rir))] = 1.0
    if fade > 0 and keep < len(rir):
        ramp = 0.5 + 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        end = min(keep + fade, len(rir))
        window[keep:end] = ramp[: end - keep]
    return window


def _image_method(config, room, source, mic, rt60):
    """RIR of a shoebox by the image method, and of its direct path alone."""
    absorption, order = pra.inverse_sabine(rt60, room)
    order = int(min(order, config.max_order))
    rirs = []
    for max_order in (order, 0):
        sim = pra.ShoeBox(
            list(room),
            fs=config.sample_rate,
            materials=pra.Material(absorption),
            max_order=max_order,
            air_absorption=False,
        )
        sim.add_source(list(source))
        sim.add_microphone(list(mic))
        sim.compute_rir()
        rirs.append(np.asarray(sim.rir[0][0], dtype=np.float64))
    rir, direct = rirs
    if direct.size < rir.size:
        direct = np.pad(direct, (0, rir.size - direct.size))
    return rir, direct[: rir.size], absorption, order


def _draw_geometry(config, rng):
    """Room dimensions, talker and microphone positions."""
    room = np.array(
        [
            rng.uniform(*config.length_range),
            rng.uniform(*config.length_range),
            rng.uniform(*config.height_range),
        ]
    )
    margin = config.wall_margin
    for _ in range(100):
        mic = np.array(
            [
                rng.uniform(margin, room[0] - margin),
                rng.uniform(margin, room[1] - margin),
                min(rng.uniform(*config.mic_height_range), room[2] - margin),
            ]
        )
        angle = rng.uniform(0, 2 * np.pi)
        distance = rng.uniform(*config.distance_range)
        source = np.array(
            [
                mic[0] + distance * np.cos(angle),
                mic[1] + distance * np.sin(angle),
                min(rng.uniform(*config.source_height_range), room[2] - margin),
            ]
        )
        inside = np.all(source[:2] >= margin) and np.all(
            source[:2] <= room[:2] - margin
        )
        if inside:
            return room, source, mic
    raise RuntimeError(
        "Could not place talker and microphone in 100 tries; lower "
        "distance_range or wall_margin, or enlarge length_range."
    )


def simulate_room(config, rng):
    """Draws a room and simulates an RIR whose measured RT60 is in range.

    A target RT60 is drawn uniformly inside ``config.rt60_range`` (shrunk by
    the tolerance so that an accepted value stays in range); the absorption
    that Sabine's formula gives for it is then corrected by the ratio of
    target to measured RT60 until they agree within the tolerance (at most
    ``max_iterations`` times; if they never do, the closest in-range attempt
    is kept, and failing that a new room is drawn).

    Arguments
    ---------
    config : RoomConfig
        The room distribution.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    RoomResponse
        The RIR, its target part and its measurements.

    Raises
    ------
    RuntimeError
        If no room in 20 draws reaches the RT60 range.

    Example
    -------
    >>> cfg = RoomConfig(rt60_range=(0.2, 0.4))
    >>> room = simulate_room(cfg, np.random.default_rng(0))
    >>> 0.2 <= room.rt60 <= 0.4, room.rir.shape == room.target.shape
    (True, True)
    """
    low, high = config.rt60_range
    tol = config.rt60_tolerance
    lo_t, hi_t = low / (1 - tol), high / (1 + tol)
    if lo_t > hi_t:
        lo_t = hi_t = 0.5 * (low + high)
    for _ in range(20):
        room, source, mic = _draw_geometry(config, rng)
        goal = rng.uniform(lo_t, hi_t)
        design, best = goal, None
        for _ in range(config.max_iterations):
            try:
                rir, direct, absorption, order = _image_method(
                    config, room, source, mic, design
                )
                measured = measure_rt60(rir, config.sample_rate)
            except ValueError:
                break
            error = abs(np.log(measured / goal))
            if low <= measured <= high and (best is None or error < best[0]):
                best = (error, rir, direct, absorption, order, measured)
            if error <= np.log1p(tol) and low <= measured <= high:
                break
            design *= goal / measured
        if best is None:
            continue
        _, rir, direct, absorption, order, measured = best
        direct_index = int(np.argmax(np.abs(direct)))
        window = target_window(
            rir,
            direct_index,
            config.sample_rate,
            config.direct_ms,
            config.fade_ms,
        )
        target = direct + window * (rir - direct)
        rest = np.sum((rir - target) ** 2)
        drr = 10 * np.log10(np.sum(target**2) / max(rest, 1e-300))
        return RoomResponse(
            rir=rir,
            target=target,
            rt60=measured,
            rt60_target=goal,
            drr=float(drr),
            room=tuple(room),
            source=tuple(source),
            mic=tuple(mic),
            absorption=float(absorption),
            max_order=order,
            direct_index=direct_index,
        )
    raise RuntimeError(
        f"No simulated room reached an RT60 in {config.rt60_range} s; widen "
        "rt60_range or raise max_order."
    )


def reverberate(speech, room):
    """Convolves speech with a room's RIR and with its target part.

    Arguments
    ---------
    speech : array_like
        Clean 1-D speech.
    room : RoomResponse
        The simulated room.

    Returns
    -------
    reverb : numpy.ndarray
        ``speech * rir``, cut to the length of ``speech``.
    anechoic : numpy.ndarray
        ``speech * target``, same length and delay.

    Example
    -------
    >>> room = simulate_room(RoomConfig(rt60_range=(0.2, 0.3)),
    ...                      np.random.default_rng(1))
    >>> rev, ane = reverberate(np.ones(4000), room)
    >>> rev.shape, ane.shape
    ((4000,), (4000,))
    """
    x = np.asarray(speech, dtype=np.float64)
    reverb = fftconvolve(x, room.rir)[: x.size]
    anechoic = fftconvolve(x, room.target)[: x.size]
    return reverb, anechoic


def _rng_for(seed, split, index):
    """An independent generator per item (order-free determinism)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")


def simulate_split(
    speech_clips,
    noise_clips,
    root,
    split,
    seed=0,
    config=None,
    snr_range=(0.0, 15.0),
    level_range=(-30.0, -20.0),
    synthetic_share=0.2,
    progress=True,
):
    """Writes one split of the WHAMR! layout from clean clips.

    For item ``i`` (clip ``i``), with a generator seeded by ``(seed, split,
    i)``: a room is simulated (:func:`simulate_room`), the clip reverberated
    (:func:`reverberate`), scaled so that the reverberant speech has an
    active level (ITU-T P.56) drawn from ``level_range`` dBFS, and noise
    (:func:`~speechbrain_elbo.dataprep.sources.choose_noise`) added at an
    SNR drawn uniformly from ``snr_range`` relative to that active level.
    If any signal would exceed a peak of 0.99, all four are scaled down by
    the same factor (recorded as ``gain``).

    Arguments
    ---------
    speech_clips : list of Clip
        Clean speech, one item per clip.
    noise_clips : list of Clip
        Real noise files (may be empty: synthetic noise only).
    root : str or pathlib.Path
        Root of the WHAMR! layout; writes
        ``root/wav16k/min/<split>/{s1_anechoic,s1_reverb,mix_single_reverb,
        noise}/<id>.wav`` and ``root/metadata/<split>.csv``.
    split : str
        Split folder name (``tr``, ``cv``, ``tt``).
    seed : int
        Seed.
    config : RoomConfig or None
        Room distribution (default :class:`RoomConfig`).
    snr_range : tuple of float
        SNR range in dB.
    level_range : tuple of float
        Active level range of the reverberant speech in dBFS.
    synthetic_share : float
        Probability of synthetic noise when real noise is available.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of dict
        The metadata rows.
    """
    config = config or RoomConfig()
    root = Path(root)
    folders = {
        name: root / "wav16k" / "min" / split / name for name in WHAMR_FOLDERS
    }
    rows = []
    items = enumerate(speech_clips)
    if progress:
        items = tqdm(items, total=len(speech_clips), desc=f"Simulating {split}")
    for index, clip in items:
        rng = _rng_for(seed, split, index)
        speech = clip.read().astype(np.float64)
        room = simulate_room(config, rng)
        reverb, anechoic = reverberate(speech, room)
        level, _ = active_speech_level(reverb)
        if level <= 0:
            raise ValueError(f"{clip.path} is silent; remove it.")
        level_db = rng.uniform(*level_range)
        gain = np.sqrt(10 ** (level_db / 10) / level)
        reverb, anechoic = reverb * gain, anechoic * gain
        snr = float(rng.uniform(*snr_range))
        noise, noise_info = choose_noise(
            noise_clips, speech.size, rng, synthetic_share
        )
        noise = scale_to_snr(10 ** (level_db / 10), noise, snr)
        mix = reverb + noise
        peak = max(np.max(np.abs(s)) for s in (mix, reverb, anechoic, noise))
        rescale = min(1.0, MAX_PEAK / peak)
        uid = f"{split}{index:05d}_{_safe(clip.uid)}"
        signals = {
            "s1_anechoic": anechoic,
            "s1_reverb": reverb,
            "mix_single_reverb": mix,
            "noise": noise,
        }
        for name, signal in signals.items():
            write_wav_atomic(folders[name] / f"{uid}.wav", signal * rescale)
        row = {
            "id": uid,
            "spk_id": clip.speaker,
            "source": f"{clip.package}:{clip.source}",
            "licence": clip.licence,
            "clip": clip.uid,
            "clip_start": clip.start,
            "clip_stop": clip.stop,
            "snr_db": round(snr, 3),
            "level_dbfs": round(level_db + 20 * np.log10(rescale), 3),
            "gain": round(rescale, 5),
            "duration_s": round(speech.size / SAMPLE_RATE, 4),
        }
        row.update(noise_info)
        row.update(room.metadata())
        rows.append(row)
    write_csv_atomic(root / "metadata" / f"{split}.csv", rows)
    return rows


def simulate_folder(
    speech_dir,
    out_dir,
    noise_dir=None,
    split="tt",
    seed=0,
    config=None,
    snr_range=(0.0, 15.0),
    level_range=(-30.0, -20.0),
    licence="unknown",
    overwrite=False,
    progress=True,
):
    """Turns a folder of clean 16 kHz speech into one WHAMR! split.

    Every .wav/.flac file under ``speech_dir`` becomes one item (see
    :func:`simulate_split`). Noise comes from the files under ``noise_dir``
    (their sub-folder names are the noise categories), plus synthetic noise;
    without ``noise_dir`` the noise is synthetic only. The split is written
    into a temporary folder and moved into place when complete; a second
    call with the same options does nothing.

    Arguments
    ---------
    speech_dir : str or pathlib.Path
        Clean speech (16 kHz mono).
    out_dir : str or pathlib.Path
        Root of the WHAMR! layout (other splits in it are left alone).
    noise_dir : str or pathlib.Path or None
        Noise recordings (16 kHz).
    split : str
        ``tr``, ``cv`` or ``tt``.
    seed : int
        Seed.
    config : RoomConfig or None
        Room distribution.
    snr_range : tuple of float
        SNR range in dB.
    level_range : tuple of float
        Active level range of the reverberant speech (dBFS).
    licence : str
        Licence recorded for the speech files.
    overwrite : bool
        Rebuild a split made with other options.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The metadata CSV of the split.

    Raises
    ------
    FileExistsError
        If the split exists and was made otherwise (without ``overwrite``).

    Example
    -------
    >>> from speechbrain_elbo.dataprep.sources import DEFAULT_SAMPLES
    >>> root = getfixture("tmp_path")
    >>> clean = root / "clean"
    >>> clean.mkdir()
    >>> _ = shutil.copy(DEFAULT_SAMPLES / "speech_ru.wav", clean)
    >>> csv_path = simulate_folder(clean, root / "out", progress=False,
    ...                            config=RoomConfig(rt60_range=(0.2, 0.3)))
    >>> sorted(p.name for p in (root / "out/wav16k/min/tt").iterdir())
    ['mix_single_reverb', 'noise', 's1_anechoic', 's1_reverb']
    """
    config = config or RoomConfig()
    out_dir = Path(out_dir)
    speech = clips_from_folder(speech_dir, "speech", licence)
    noise = clips_from_folder(noise_dir, "noise") if noise_dir else []
    options = {
        "speech_dir": str(Path(speech_dir).resolve()),
        "noise_dir": str(Path(noise_dir).resolve()) if noise_dir else None,
        "speech": [(c.uid, c.num_samples) for c in speech],
        "noise": [(c.uid, c.num_samples) for c in noise],
        "split": split,
        "seed": seed,
        "config": asdict(config),
        "snr_range": list(snr_range),
        "level_range": list(level_range),
    }
    options = json.loads(json.dumps(options))
    split_dir = out_dir / "wav16k" / "min" / split
    csv_path = out_dir / "metadata" / f"{split}.csv"
    stamp = out_dir / "metadata" / f"{split}.{STAMP_NAME}"
    if stamp.is_file() and split_dir.is_dir():
        if json.loads(stamp.read_text()) == options:
            logger.info(f"{split_dir} is already simulated with these options")
            return csv_path
        if not overwrite:
            raise FileExistsError(
                f"{split_dir} was simulated with other options ({stamp}). "
                "Pass overwrite=True (--overwrite) or another --out."
            )
    elif split_dir.exists() and not overwrite:
        raise FileExistsError(
            f"{split_dir} exists and was not made by this tool. Pass "
            "overwrite=True (--overwrite) or another --out."
        )
    tmp = out_dir / f".{split}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        simulate_split(
            speech,
            noise,
            tmp,
            split,
            seed,
            config,
            snr_range,
            level_range,
            progress=progress,
        )
        shutil.rmtree(split_dir, ignore_errors=True)
        split_dir.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "wav16k" / "min" / split).rename(split_dir)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "metadata" / f"{split}.csv").replace(csv_path)
        stamp.write_text(json.dumps(options, indent=1) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return csv_path


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_elbo.dataprep.rooms",
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Writes OUT/wav16k/min/SPLIT/{s1_anechoic,s1_reverb,"
            "mix_single_reverb,noise}/<id>.wav and OUT/metadata/SPLIT.csv "
            "(columns id, spk_id, source, licence, snr_db, rt60 (measured), "
            "rt60_target, drr (dB), room/source/mic coordinates, ...)."
        ),
    )
    parser.add_argument("--speech", required=True, help="clean 16 kHz speech")
    parser.add_argument("--out", required=True, help="output root")
    parser.add_argument("--noise", help="noise folder (default: synthetic)")
    parser.add_argument("--split", default="tt", help="tr, cv or tt")
    parser.add_argument(
        "--seed", type=int, default=0, help="same seed, same bytes"
    )
    parser.add_argument(
        "--rt60",
        nargs=2,
        type=float,
        default=(0.2, 1.0),
        metavar=("LOW", "HIGH"),
        help="measured RT60 range in seconds",
    )
    parser.add_argument(
        "--snr",
        nargs=2,
        type=float,
        default=(0.0, 15.0),
        metavar=("LOW", "HIGH"),
        help="SNR range in dB (WHAMR!: -6 3)",
    )
    parser.add_argument(
        "--max-order", type=int, default=40, help="image-source order cap"
    )
    parser.add_argument(
        "--direct-ms",
        type=float,
        default=2.5,
        help="ms of RIR kept after the direct path in the target",
    )
    parser.add_argument(
        "--licence",
        default="unknown",
        help="licence of the speech, recorded in the metadata",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a split simulated with other options",
    )
    return parser


def main(argv=None):
    """Command line entry point.

    Arguments
    ---------
    argv : list of str or None
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    pathlib.Path
        The metadata CSV written.
    """
    args = _parser().parse_args(argv)
    config = RoomConfig(
        rt60_range=tuple(args.rt60),
        max_order=args.max_order,
        direct_ms=args.direct_ms,
    )
    path = simulate_folder(
        args.speech,
        args.out,
        noise_dir=args.noise,
        split=args.split,
        seed=args.seed,
        config=config,
        snr_range=tuple(args.snr),
        licence=args.licence,
        overwrite=args.overwrite,
    )
    print(f"Wrote {path}")
    return path


if __name__ == "__main__":
    main()
