"""The speech and noise of the mini data sets, prepared from Debian packages.

:func:`load_sources` returns the :class:`~.clips.SourceBank` a build uses:
the clips prepared from the Debian packages
(:mod:`~speechbrain_elbo.minidata.packages`), or, when those cannot be
fetched, the fixtures bundled with this package (loudly: a warning and a
banner of ``!`` on stderr).

- speech (:func:`prepare_speech`): ``festvox-ru`` (Russian, male),
  ``asterisk-core-sounds-en-g722`` (English, female),
  ``asterisk-core-sounds-it-g722`` (Italian, male; both G.722 decoded with
  Debian's ``ffmpeg``) and ``pocketsphinx-testdata`` (LibriVox clips and
  three raw recordings). Leading and trailing silence is trimmed; short
  telephone prompts are joined into utterances of a few seconds.
- noise (:func:`prepare_noise`): ``sonic-pi-samples`` (CC0 ambiences, loops
  and hiss), ``fillets-ng-data`` (music) and babble made by summing several
  talkers of ``fillets-ng-data-nl`` (Dutch voice acting). Synthetic white,
  pink and brown noise come from
  :func:`~speechbrain_elbo.minidata.signals.synthetic_noise`.

Every clip records its package, its path inside the package and its licence.
The prepared clips are cached beside the packages, with CSV manifests.

Example
-------
>>> bank = load_sources(samples_dir=DEFAULT_SAMPLES, segment_seconds=None)
>>> len(bank.speech), len(bank.noise), bank.origin == str(DEFAULT_SAMPLES)
(3, 2, True)
"""

import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_elbo.fileio import audio_info, write_audio_atomic
from speechbrain_elbo.minidata.clips import (
    DEFAULT_SAMPLES,
    Clip,
    SourceBank,
    load_clips,
    load_fixtures,
    save_clips,
)
from speechbrain_elbo.minidata.packages import (
    LICENCES,
    NOISE_PACKAGES,
    SPEECH_PACKAGES,
    SourcesUnavailable,
    cache_root,
    decode_g722,
    fetch_package,
)
from speechbrain_elbo.minidata.signals import (
    SAMPLE_RATE,
    active_speech_level,
    fade_edges,
    load_audio,
    peak_normalise,
    split_at_pauses,
    to_16k,
    trimmed,
)

logger = get_logger(__name__)

#: Bumped when the prepared clips change, so that old caches are rebuilt.
PREP_VERSION = 1

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


_BANNER = "!" * 78


def _speech_items(packages, ffmpeg_tmp):
    """Yields (speaker, package, source, licence, waveform) per recording."""
    festvox = packages["festvox-ru"] / _FESTVOX_DIR
    for path in sorted(festvox.glob("ru_*.wav")):
        wav, rate = load_audio(path)
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
            wav, rate = load_audio(wav_path)
            yield (
                speaker,
                package,
                str(prompt.relative_to(packages[package])),
                LICENCES[package],
                to_16k(wav, rate),
            )
    sphinx = packages["pocketsphinx-testdata"] / _SPHINX_DIR
    for path in sorted((sphinx / "librivox").glob("*.wav")):
        wav, rate = load_audio(path)
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
        Cache root (default :data:`~.packages.DEFAULT_CACHE`).
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

    Example
    -------
    >>> prepare_speech(getfixture("tmp_path"), apt_get="no-such-apt-get")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.minidata.packages.SourcesUnavailable: ...
    """
    root = cache_root(cache_dir)
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
        write_audio_atomic(
            path, peak_normalise(wav, 0.9), SAMPLE_RATE, "PCM_16"
        )
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
            wav = trimmed(item[4])
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

    Example
    -------
    >>> files = sorted(DEFAULT_SAMPLES.glob("speech_*.wav"))
    >>> babble, used = make_babble(files, 2, 16000, np.random.default_rng(0))
    >>> babble.shape, round(float(np.max(np.abs(babble))), 2), len(used) >= 2
    ((16000,), 0.9, True)
    """
    cache, used = {}, []
    total = np.zeros(num_samples, dtype=np.float64)
    for _ in range(num_talkers):
        track, length = [], 0
        while length < num_samples:
            path = talker_files[int(rng.integers(len(talker_files)))]
            if path not in cache:
                wav, rate = load_audio(path)
                cache[path] = fade_edges(trimmed(to_16k(wav, rate)))
            if cache[path].size == 0:
                continue
            used.append(path)
            track.append(cache[path])
            length += cache[path].size
        talker = np.concatenate(track)[:num_samples]
        level, _ = active_speech_level(talker)
        total += talker / np.sqrt(max(level, 1e-12))
    return peak_normalise(total.astype(np.float32)), used


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
        Cache root (default :data:`~.packages.DEFAULT_CACHE`).
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

    Example
    -------
    >>> prepare_noise(getfixture("tmp_path"), apt_get="no-such-apt-get")
    Traceback (most recent call last):
    ...
    speechbrain_elbo.minidata.packages.SourcesUnavailable: ...
    """
    root = cache_root(cache_dir)
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
        write_audio_atomic(
            path, peak_normalise(wav, 0.9), SAMPLE_RATE, "PCM_16"
        )
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
        info = audio_info(path)
        if info.frames < MIN_NOISE_SECONDS * info.sample_rate:
            continue
        if path.stem not in cc0:
            continue
        wav, rate = load_audio(path)
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
        wav, rate = load_audio(path)
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
        Cache of the Debian packages (default :data:`~.packages.DEFAULT_CACHE`).
    samples_dir : str or pathlib.Path or None
        If given, the fixtures of this folder are used and nothing is
        fetched.
    apt_get : str
        The apt-get command.
    segment_seconds : float or None
        Segment length for the fixtures (see :func:`~.clips.load_fixtures`).

    Returns
    -------
    SourceBank
        The speech and noise clips.

    Example
    -------
    >>> bank = load_sources(samples_dir=DEFAULT_SAMPLES, segment_seconds=2.0)
    >>> len(bank.speech), bank.fallback
    (4, False)
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
            f"({err}).\nFalling back to the few seconds of bundled "
            f"fixtures in {DEFAULT_SAMPLES}: the data set built from them is "
            "TINY and only good for smoke tests."
        )
        logger.warning(message)
        _banner(message)
        bank = load_fixtures(DEFAULT_SAMPLES, segment_seconds)
        bank.fallback = True
        return bank
