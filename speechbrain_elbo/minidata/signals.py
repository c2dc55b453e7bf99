"""Signal utilities of the mini data sets: levels, trimming, noise, checks.

Everything here works on 1-D NumPy signals at :data:`SAMPLE_RATE`:

- levels: the ITU-T P.56 active speech level (:func:`active_speech_level`)
  that every SNR of the mini data sets is measured against, and the plain
  :func:`power` used for noise;
- editing: :func:`trim_silence`, :func:`split_at_pauses`,
  :func:`fade_edges`, :func:`loop_to_length`, :func:`to_16k`,
  :func:`peak_normalise`;
- noise: :func:`synthetic_noise` (white, pink, brown) and
  :func:`scale_to_snr`;
- :func:`check_full_scale`, the check made before a signal is written as
  16-bit PCM (which would clip it), and :func:`seeded_rng`, the generators
  that make every build deterministic.

Example
-------
>>> x = fade_edges(np.ones(16000))
>>> start, stop = trim_silence(np.concatenate([np.zeros(8000), x]))
>>> start, stop
(6400, 24000)
"""

import zlib

import numpy as np
import soundfile as sf
import torch
import torchaudio
from scipy.signal import lfilter

#: Sample rate of every prepared clip.
SAMPLE_RATE = 16000

#: Colours of the synthetic noise (see :func:`synthetic_noise`).
SYNTHETIC_COLOURS = ("white", "pink", "brown")


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


def load_audio(path):
    """Reads any audio file soundfile can decode, as mono float32.

    Arguments
    ---------
    path : str or pathlib.Path
        The file (channels are averaged).

    Returns
    -------
    wav : numpy.ndarray
        1-D float32 samples.
    rate : int
        The file's sample rate.

    Example
    -------
    >>> path = getfixture("tmp_path") / "st.wav"
    >>> sf.write(path, np.ones((4, 2)) * [0.5, 0.25], 8000)
    >>> wav, rate = load_audio(path)
    >>> wav.tolist(), rate
    ([0.375, 0.375, 0.375, 0.375], 8000)
    """
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


def peak_normalise(wav, peak=0.9):
    """Scales a signal so that its peak is ``peak``.

    Arguments
    ---------
    wav : numpy.ndarray
        1-D signal; a silent (or empty) one is returned unchanged.
    peak : float
        Wanted peak absolute value.

    Returns
    -------
    numpy.ndarray
        The scaled signal (float32).

    Example
    -------
    >>> peak_normalise(np.array([0.5, -0.25])).tolist()
    [0.8999999761581421, -0.44999998807907104]
    """
    top = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav if top == 0 else (wav * (peak / top)).astype(np.float32)


def trimmed(wav):
    """The part of a recording that holds sound (see :func:`trim_silence`).

    Arguments
    ---------
    wav : numpy.ndarray
        1-D signal at :data:`SAMPLE_RATE`.

    Returns
    -------
    numpy.ndarray
        A view of ``wav`` without its leading and trailing silence.

    Example
    -------
    >>> x = np.zeros(16000)
    >>> x[8000:9600] = 0.5
    >>> trimmed(x).size
    4800
    """
    start, stop = trim_silence(wav)
    return wav[start:stop]


def check_full_scale(wav, path):
    """Refuses a signal that 16-bit PCM would clip.

    The mini data sets are written as 16-bit PCM
    (:func:`speechbrain_elbo.fileio.write_audio_atomic` with
    ``subtype="PCM_16"``), which clips samples beyond full scale; every
    writer rescales its signals first and calls this check before writing.

    Arguments
    ---------
    wav : array_like
        The samples.
    path : str or pathlib.Path
        The file about to be written (named in the error).

    Raises
    ------
    ValueError
        If a sample lies outside [-1, 1].

    Example
    -------
    >>> check_full_scale(np.array([0.5, -1.0]), "ok.wav")
    >>> check_full_scale(np.array([1.5]), "x.wav")
    Traceback (most recent call last):
    ...
    ValueError: Samples for x.wav reach 1.500 > 1 and would clip; ...
    """
    x = np.asarray(wav, dtype=np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 1.0:
        raise ValueError(
            f"Samples for {path} reach {peak:.3f} > 1 and would clip; "
            "rescale the signal before writing it."
        )


def seeded_rng(seed, *keys):
    """A generator seeded by ``seed`` and string or integer keys.

    Strings enter through their CRC-32, so the same ``(seed, keys)`` give the
    same stream on every machine and in any order of calls: each item of a
    build draws from its own generator.

    Arguments
    ---------
    seed : int
        The build's seed.
    *keys : str or int
        What the generator is for (e.g. a split name and an item index).

    Returns
    -------
    numpy.random.Generator
        The generator.

    Example
    -------
    >>> a = seeded_rng(7, "tt", 3).integers(1000, size=3)
    >>> b = seeded_rng(7, "tt", 3).integers(1000, size=3)
    >>> bool((a == b).all()), bool((a != seeded_rng(7, "cv", 3).integers(
    ...     1000, size=3)).any())
    (True, True)
    """
    parts = [seed] + [
        zlib.crc32(key.encode()) if isinstance(key, str) else key
        for key in keys
    ]
    return np.random.default_rng(parts)


def mix_at_snr(speech, noise, snr_db, level_dbfs):
    """Clean speech at an active level, plus noise at an SNR to that level.

    The speech is scaled to the ITU-T P.56 active level ``level_dbfs``
    (:func:`active_speech_level`), the noise to ``snr_db`` below it
    (:func:`scale_to_snr`): how MiniVB and ``tools/unseen_check.py`` mix.
    If the mixture would exceed 0.99 of full scale, both are scaled down by
    the same ``gain`` (the SNR is unchanged).

    Arguments
    ---------
    speech : numpy.ndarray
        1-D clean speech.
    noise : numpy.ndarray
        1-D noise of the same length.
    snr_db : float
        Wanted SNR (active speech level over noise power), dB.
    level_dbfs : float
        Wanted active speech level, dB relative to full scale.

    Returns
    -------
    clean, noisy : numpy.ndarray
        float64 signals.
    gain : float
        The common factor applied (1.0 when nothing clipped).

    Example
    -------
    >>> speech = np.sin(np.arange(16000) / 5.0)
    >>> noise = np.random.default_rng(0).standard_normal(16000)
    >>> clean, noisy, gain = mix_at_snr(speech, noise, 7.5, -25.0)
    >>> level, _ = active_speech_level(clean)
    >>> float(round(10 * np.log10(level / power(noisy - clean)), 6)), gain
    (7.5, 1.0)
    """
    speech = np.asarray(speech, dtype=np.float64)
    if speech.shape != np.shape(noise):
        raise ValueError(
            f"speech and noise differ in length: {speech.shape} vs "
            f"{np.shape(noise)}."
        )
    level, _ = active_speech_level(speech)
    if level <= 0:
        raise ValueError("The speech is silent; it has no active level.")
    target = 10 ** (level_dbfs / 10)
    clean = speech * np.sqrt(target / level)
    noisy = clean + scale_to_snr(target, noise, snr_db)
    peak = max(np.max(np.abs(noisy)), np.max(np.abs(clean)))
    gain = min(1.0, 0.99 / peak)
    return clean * gain, noisy * gain, gain
