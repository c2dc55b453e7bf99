"""Simulated rooms: impulse responses, their RT60 and their direct part.

Shoebox rooms are simulated with pyroomacoustics (image method, as WHAMR!
did). :func:`simulate_room` draws a room, a talker and a microphone
(:class:`RoomConfig`) and returns a :class:`RoomResponse`:

- ``rir``: the room impulse response (RIR);
- ``target``: the direct path of the same RIR plus whatever arrives in the
  following ``direct_ms`` = 2.5 ms (faded out over a further 1 ms), with the
  same delay and length as ``rir``; :func:`reverberate` convolves speech
  with both, giving a reverberant signal and its dereverberation target
  aligned sample by sample, as WHAMR!'s ``s1_reverb`` and ``s1_anechoic``.

The RT60 of each RIR is measured (:func:`measure_rt60`: Schroeder backward
integration, T30) and the absorption is adjusted until the measured value
lies within 10 % of the drawn target and inside the configured range (the
RT60 that Sabine's formula promises is typically missed by 10-60 %). The
direct-to-reverberant ratio (DRR) is measured too.

Example
-------
>>> room = simulate_room(RoomConfig(rt60_range=(0.2, 0.3)),
...                      np.random.default_rng(0))
>>> 0.2 <= room.rt60 <= 0.3, room.direct_index < room.rir.size
(True, True)
"""

from dataclasses import dataclass

import numpy as np
import pyroomacoustics as pra
from scipy.signal import fftconvolve

from speechbrain_elbo.minidata.signals import SAMPLE_RATE


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

        Example
        -------
        >>> room = simulate_room(RoomConfig(rt60_range=(0.2, 0.3)),
        ...                      np.random.default_rng(0))
        >>> row = room.metadata()
        >>> row["rt60"] == round(room.rt60, 4), sorted(row)[:3]
        (True, ['absorption', 'direct_delay', 'distance_m'])
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
