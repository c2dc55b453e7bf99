"""Helpers shared by the corpus preparation scripts.

Everything a corpus preparation needs besides its folder layout lives here:
audio header and content checks, pairing of input/target files with a
listing of the unpaired ones, resampling into a cache under the save folder,
and the completion marker that makes a preparation idempotent.
"""

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import soundfile as sf
import torch
import torchaudio
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_elbo.fileio import (
    audio_info,
    write_audio_atomic,
    write_json_atomic,
)

logger = get_logger(__name__)

#: A file whose peak absolute amplitude is below this is reported as silent
#: (-80 dBFS, about three steps of 16-bit quantisation).
SILENCE_PEAK = 1e-4

#: How many offending files an error message lists before summarising.
MAX_LISTED = 10

#: Bumped when the content of the manifests changes, so that a preparation
#: made by an older version of this code is redone.
PREP_VERSION = 1


def format_file_list(items, limit=MAX_LISTED):
    """Formats offending files (or messages) for an error, one per line.

    Arguments
    ---------
    items : list
        Paths or strings to list.
    limit : int
        At most this many are shown; the rest are counted.

    Returns
    -------
    str
        One indented line per item, plus a line saying how many were left out.

    Example
    -------
    >>> print(format_file_list(["a.wav", "b.wav", "c.wav"], limit=2))
      a.wav
      b.wav
      ... and 1 more
    """
    items = [str(item) for item in items]
    lines = [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def _rates_text(rates):
    return " or ".join(f"{rate} Hz" for rate in rates)


def read_audio_checked(path, expected_sr, start=0, stop=None):
    """Reads a mono audio file and checks its sample rate and values.

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.
    expected_sr : int or collection of int
        The accepted sample rate(s).
    start : int
        First sample to read.
    stop : int or None
        One past the last sample to read (None: to the end of the file).

    Returns
    -------
    torch.Tensor
        The samples as a 1-D float32 tensor.

    Raises
    ------
    ValueError
        If the sample rate is not accepted, the file has more than one
        channel, or it contains NaN or infinite values.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, [0.5, -0.25, 0.125, 0.0], 16000, subtype="FLOAT")
    >>> read_audio_checked(path, 16000, start=1, stop=3)
    tensor([-0.2500,  0.1250])
    >>> read_audio_checked(path, 8000)
    Traceback (most recent call last):
    ...
    ValueError: ...a.wav has a sample rate of 16000 Hz, expected 8000 Hz...
    """
    rates = (expected_sr,) if isinstance(expected_sr, int) else expected_sr
    info = audio_info(path)
    if info.sample_rate not in rates:
        raise ValueError(
            f"{path} has a sample rate of {info.sample_rate} Hz, expected "
            f"{_rates_text(rates)}. Resample the corpus or run its "
            "preparation script, which writes a resampled copy."
        )
    if info.channels != 1:
        raise ValueError(
            f"{path} has {info.channels} channels; only mono audio is "
            "supported. Convert the file to mono."
        )
    data, _ = sf.read(
        str(path), start=start, stop=stop, dtype="float32", always_2d=False
    )
    wav = torch.from_numpy(data)
    if not torch.isfinite(wav).all():
        raise ValueError(
            f"{path} contains NaN or infinite samples. Replace the file."
        )
    return wav


def check_content(wav, path):
    """Raises if a waveform is empty or silent.

    Arguments
    ---------
    wav : torch.Tensor
        The samples.
    path : str or pathlib.Path
        The file they came from (for the message).

    Raises
    ------
    ValueError
        If ``wav`` has no samples or its peak is below ``SILENCE_PEAK``.

    Example
    -------
    >>> check_content(torch.tensor([0.0, 0.3]), "ok.wav")
    >>> check_content(torch.zeros(8), "quiet.wav")
    Traceback (most recent call last):
    ...
    ValueError: quiet.wav is silent (peak amplitude 0.0e+00 ...
    """
    if wav.numel() == 0:
        raise ValueError(f"{path} is empty (0 samples). Replace the file.")
    peak = wav.abs().max().item()
    if peak < SILENCE_PEAK:
        raise ValueError(
            f"{path} is silent (peak amplitude {peak:.1e} < "
            f"{SILENCE_PEAK:.0e}). Replace or remove the file and its twin."
        )


def require_dirs(root, subdirs, layout):
    """Checks that a corpus folder holds the expected sub-folders.

    Arguments
    ---------
    root : str or pathlib.Path
        The corpus root folder.
    subdirs : list of str
        Sub-folders (relative to ``root``) that must exist.
    layout : str
        A description of the expected layout, appended to the error.

    Raises
    ------
    FileNotFoundError
        Naming the missing folders and the expected layout.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> (root / "a").mkdir()
    >>> require_dirs(root, ["a"], "root/a")
    >>> require_dirs(root, ["a", "b"], "root/{a,b}")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Missing folder(s) in ...
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Data folder {root} does not exist. Expected layout:\n{layout}"
        )
    missing = [root / sub for sub in subdirs if not (root / sub).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"Missing folder(s) in {root}:\n{format_file_list(missing)}\n"
            f"Expected layout:\n{layout}"
        )


def pair_files(dirs, ext=".wav"):
    """Pairs the files of several folders by name.

    Arguments
    ---------
    dirs : dict
        Role -> folder, e.g.
        ``{"noisy_wav": noisy_dir, "clean_wav": clean_dir}``.
    ext : str
        File extension to collect.

    Returns
    -------
    dict
        Utterance id (file stem) -> {role: path}, sorted by id.

    Raises
    ------
    ValueError
        If a folder has no such file, or a file has no twin in another folder
        (all unpaired files are listed).

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> for sub in ("n", "c"):
    ...     (root / sub).mkdir()
    ...     (root / sub / "u1.wav").touch()
    >>> pairs = pair_files({"noisy_wav": root / "n", "clean_wav": root / "c"})
    >>> sorted(pairs), pairs["u1"]["clean_wav"].name
    (['u1'], 'u1.wav')
    """
    listings = {}
    for role, folder in dirs.items():
        files = {p.stem: p for p in Path(folder).glob(f"*{ext}") if p.is_file()}
        if not files:
            raise ValueError(f"No {ext} files in {folder}.")
        listings[role] = files
    all_ids = sorted(set().union(*listings.values()))
    problems = []
    for role, files in listings.items():
        folder = Path(dirs[role])
        for uid in all_ids:
            if uid not in files:
                others = [
                    str(listing[uid])
                    for other, listing in listings.items()
                    if other != role and uid in listing
                ]
                problems.append(
                    f"{folder / (uid + ext)} is missing (twin of "
                    f"{', '.join(others)})"
                )
    if problems:
        raise ValueError(
            f"{len(problems)} file(s) have no twin: every file must exist in "
            f"all of {', '.join(str(d) for d in dirs.values())}.\n"
            f"{format_file_list(problems)}"
        )
    return {
        uid: {role: listings[role][uid] for role in dirs} for uid in all_ids
    }


def check_headers(paths, rates):
    """Checks sample rate, channel count and emptiness of many files at once.

    Only headers are read, so this is quick. All offending files are listed
    in a single error.

    Arguments
    ---------
    paths : list of pathlib.Path
        Files to check.
    rates : collection of int
        Accepted sample rates.

    Returns
    -------
    dict
        Path -> :class:`speechbrain_elbo.fileio.AudioInfo`.

    Raises
    ------
    ValueError
        Listing unreadable files, files at another sample rate, files with
        more than one channel and empty files.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, [0.1] * 480, 48000)
    >>> check_headers([path], (48000, 16000))[path].frames
    480
    >>> check_headers([path], (16000,))
    Traceback (most recent call last):
    ...
    ValueError: 1 file(s) have a sample rate other than 16000 Hz...
    """
    infos, unreadable, bad_rate, multi, empty = {}, [], [], [], []
    for path in paths:
        try:
            info = audio_info(path)
        except (FileNotFoundError, ValueError) as err:
            unreadable.append(str(err))
            continue
        infos[path] = info
        if info.sample_rate not in rates:
            bad_rate.append(f"{path} ({info.sample_rate} Hz)")
        if info.channels != 1:
            multi.append(f"{path} ({info.channels} channels)")
        if info.frames == 0:
            empty.append(path)
    sections = []
    if unreadable:
        sections.append(
            f"{len(unreadable)} file(s) cannot be read:\n"
            f"{format_file_list(unreadable)}"
        )
    if bad_rate:
        sections.append(
            f"{len(bad_rate)} file(s) have a sample rate other than "
            f"{_rates_text(rates)}:\n{format_file_list(bad_rate)}"
        )
    if multi:
        sections.append(
            f"{len(multi)} file(s) are not mono (convert them to one "
            f"channel):\n{format_file_list(multi)}"
        )
    if empty:
        sections.append(
            f"{len(empty)} file(s) are empty (0 samples):\n"
            f"{format_file_list(empty)}"
        )
    if sections:
        raise ValueError("\n".join(sections))
    return infos


def resampled_length(frames, orig_sr, new_sr):
    """Number of samples ``torchaudio.functional.resample`` returns.

    Arguments
    ---------
    frames : int
        Length at ``orig_sr``.
    orig_sr : int
        Original sample rate.
    new_sr : int
        New sample rate.

    Returns
    -------
    int
        ``ceil(frames * new_sr / orig_sr)``.

    Example
    -------
    >>> resampled_length(48001, 48000, 16000)
    16001
    """
    return -(-frames * new_sr // orig_sr)


def fingerprint(paths):
    """Hash of the names, sizes and modification times of files.

    It changes when a file is added, removed, or rewritten, so a preparation
    is redone when its source data change.

    Arguments
    ---------
    paths : iterable of pathlib.Path
        Files (order does not matter).

    Returns
    -------
    str
        A SHA-1 hex digest.

    Example
    -------
    >>> path = getfixture("tmp_path") / "a.txt"
    >>> _ = path.write_text("x")
    >>> before = fingerprint([path])
    >>> _ = path.write_text("xy")
    >>> before == fingerprint([path])
    False
    """
    digest = hashlib.sha1()
    for path in sorted(str(p) for p in paths):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def is_prepared(marker, options, outputs):
    """Tells whether a preparation with these options is already complete.

    Arguments
    ---------
    marker : str or pathlib.Path
        The completion marker (JSON of the options used).
    options : dict
        The options of the current call (JSON-serialisable).
    outputs : list of pathlib.Path
        Files the preparation produces; all must exist.

    Returns
    -------
    bool
        True if the marker records exactly ``options`` and all outputs exist.

    Example
    -------
    >>> marker = getfixture("tmp_path") / "done.json"
    >>> write_marker(marker, {"sample_rate": 16000})
    >>> is_prepared(marker, {"sample_rate": 16000}, [marker])
    True
    >>> is_prepared(marker, {"sample_rate": 8000}, [marker])
    False
    """
    marker = Path(marker)
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    # A JSON round trip turns tuples into lists, as in the stored marker.
    if recorded != json.loads(json.dumps(options)):
        logger.info(f"Options differ from {marker}; preparing again.")
        return False
    return all(Path(out).is_file() for out in outputs)


def write_marker(marker, options):
    """Records that a preparation with ``options`` finished.

    Arguments
    ---------
    marker : str or pathlib.Path
        The marker file to write (atomically).
    options : dict
        The options used.

    Example
    -------
    >>> marker = getfixture("tmp_path") / "done.json"
    >>> write_marker(marker, {"task": "dereverb"})
    >>> marker.read_text().count("dereverb")
    1
    """
    write_json_atomic(marker, options)


def cache_folder(save_folder, sample_rate):
    """Folder of the resampled copies, e.g. ``save_folder/wav16k``.

    Arguments
    ---------
    save_folder : str or pathlib.Path
        Where the preparation writes.
    sample_rate : int
        Target sample rate.

    Returns
    -------
    pathlib.Path
        The cache folder.

    Example
    -------
    >>> cache_folder("/tmp/save", 16000).name
    'wav16k'
    """
    if sample_rate % 1000 == 0:
        name = f"wav{sample_rate // 1000}k"
    else:
        name = f"wav{sample_rate}hz"
    return Path(save_folder) / name


def _cached_frames(dst, src, src_info, sample_rate):
    """Length of a valid cached copy of ``src`` at ``dst``, or None."""
    if not dst.is_file() or dst.stat().st_mtime_ns < src.stat().st_mtime_ns:
        return None
    try:
        info = audio_info(dst)
    except ValueError:
        return None
    expected = resampled_length(
        src_info.frames, src_info.sample_rate, sample_rate
    )
    if (
        info.sample_rate != sample_rate
        or info.channels != 1
        or info.frames != expected
    ):
        return None
    return info.frames


def convert_file(src, dst, sample_rate, src_info=None):
    """Checks an audio file and resamples it to a cache file if needed.

    A file already at ``sample_rate`` is read, checked and used where it is.
    Otherwise it is resampled with ``torchaudio.functional.resample`` and
    written atomically to ``dst``; a valid cached copy (right rate and length,
    newer than the source) is reused without reading the source.

    Arguments
    ---------
    src : pathlib.Path
        Source file (mono).
    dst : pathlib.Path
        Where a resampled copy goes.
    sample_rate : int
        Target sample rate.
    src_info : speechbrain_elbo.fileio.AudioInfo or None
        Header of ``src`` if already read.

    Returns
    -------
    tuple
        (path to use, number of samples at ``sample_rate``).

    Raises
    ------
    ValueError
        If the file is stereo, empty, silent or holds NaN values.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(tmp / "a.wav", torch.rand(4800).numpy() - 0.5, 48000)
    >>> path, frames = convert_file(tmp / "a.wav", tmp / "c/a.wav", 16000)
    >>> path == tmp / "c/a.wav", frames, sf.info(path).samplerate
    (True, 1600, 16000)
    """
    src, dst = Path(src), Path(dst)
    info = src_info if src_info is not None else audio_info(src)
    if info.sample_rate == sample_rate:
        wav = read_audio_checked(src, sample_rate)
        check_content(wav, src)
        return src, wav.numel()
    frames = _cached_frames(dst, src, info, sample_rate)
    if frames is not None:
        return dst, frames
    wav = read_audio_checked(src, info.sample_rate)
    check_content(wav, src)
    out = torchaudio.functional.resample(wav, info.sample_rate, sample_rate)
    # 16-bit unless resampling overshoots full scale (float then, no clip);
    # never rescaled: the level relative to the pair's other file matters
    subtype = "PCM_16" if out.abs().max() < 1.0 else "FLOAT"
    write_audio_atomic(dst, out, sample_rate, subtype, full_scale="keep")
    return dst, out.numel()


def _convert_pair(uid, roles, infos, data_folder, cache_dir, sample_rate):
    """Manifest entry of one pair, or the message of its problem."""
    entry, frames = {}, {}
    try:
        for role, src in roles.items():
            dst = cache_dir / src.relative_to(data_folder)
            path, frames[role] = convert_file(src, dst, sample_rate, infos[src])
            entry[role] = str(path.absolute())
    except ValueError as err:
        return str(err)
    if len(set(frames.values())) > 1:
        lengths = ", ".join(
            f"{roles[role]} has {n} samples" for role, n in frames.items()
        )
        return f"length mismatch in pair {uid}: {lengths}"
    entry["length"] = next(iter(frames.values())) / sample_rate
    return entry


@contextmanager
def single_threaded():
    """Runs torch on one intra-op thread inside the block, then restores.

    Per-file operations on a few seconds of audio gain nothing from
    intra-op threads, and on a machine shared with other jobs the thread
    hand-offs made the preparation several times slower.

    Example
    -------
    >>> before = torch.get_num_threads()
    >>> with single_threaded():
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def convert_pairs(pairs, data_folder, cache_dir, sample_rate, source_rates):
    """Checks, resamples and measures paired files for a manifest.

    First all headers are checked (one error lists every file at a wrong
    sample rate, not mono, or empty); then each pair is read, checked for
    silence and NaN, resampled into ``cache_dir`` if needed (mirroring its
    path below ``data_folder``), and its two lengths compared. Problems of
    all pairs are gathered into one error.

    Arguments
    ---------
    pairs : dict
        Utterance id -> {role: source path}, as from ``pair_files``.
    data_folder : pathlib.Path
        Root the source paths are relative to.
    cache_dir : pathlib.Path
        Root of the resampled copies.
    sample_rate : int
        Target sample rate.
    source_rates : collection of int
        Accepted sample rates of the source files.

    Returns
    -------
    dict
        Utterance id -> {role: absolute path (str), "length": seconds}.

    Raises
    ------
    ValueError
        Listing every offending file.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> for sub in ("n", "c"):
    ...     (tmp / sub).mkdir()
    ...     sf.write(tmp / sub / "u.wav", [0.1, -0.2] * 2400, 48000)
    >>> pairs = pair_files({"noisy_wav": tmp / "n", "clean_wav": tmp / "c"})
    >>> out = convert_pairs(pairs, tmp, tmp / "wav16k", 16000, (48000,))
    >>> out["u"]["length"], out["u"]["clean_wav"].endswith("wav16k/c/u.wav")
    (0.1, True)
    """
    data_folder, cache_dir = Path(data_folder), Path(cache_dir)
    all_files = [path for roles in pairs.values() for path in roles.values()]
    infos = check_headers(all_files, source_rates)
    entries, problems = {}, []
    progress = tqdm(pairs.items(), desc="Checking/resampling", ncols=80)
    with single_threaded():
        for uid, roles in progress:
            entry = _convert_pair(
                uid, roles, infos, data_folder, cache_dir, sample_rate
            )
            if isinstance(entry, str):
                problems.append(entry)
            else:
                entries[uid] = entry
    if problems:
        raise ValueError(
            f"{len(problems)} problem(s) found while checking audio:\n"
            f"{format_file_list(problems)}"
        )
    return entries


def warn_if_unexpected_count(corpus, split, found, expected):
    """Logs a warning when a split does not have its official size.

    Arguments
    ---------
    corpus : str
        Corpus name (for the message).
    split : str
        Split name.
    found : int
        Number of pairs found.
    expected : int
        Official number of pairs.

    Returns
    -------
    bool
        True if a warning was logged.

    Example
    -------
    >>> warn_if_unexpected_count("VoiceBank-DEMAND", "test", 824, 824)
    False
    """
    if found == expected:
        return False
    logger.warning(
        f"{corpus} {split}: found {found} pairs, the official set has "
        f"{expected}. Fine for a subset or a mini data set; otherwise check "
        "that the corpus is complete."
    )
    return True
