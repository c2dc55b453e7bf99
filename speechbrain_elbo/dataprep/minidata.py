"""Offline mini data sets in the layouts of VoiceBank-DEMAND and WHAMR!.

Both are made from real recordings shipped by Debian packages (see
:mod:`speechbrain_elbo.dataprep.sources`) so that the recipes can be run end
to end on machines without the real corpora:

- **MiniVB** (denoising), VoiceBank-DEMAND's layout at 16 kHz::

      <out>/clean_trainset_28spk_wav/pXXX_NNN.wav   (train + valid)
      <out>/noisy_trainset_28spk_wav/pXXX_NNN.wav
      <out>/clean_testset_wav/p232_NNN.wav, p257_NNN.wav
      <out>/noisy_testset_wav/...
      <out>/metadata/{train,valid,test}.csv

  The validation items are named after p226 and p287, the speakers that the
  VoiceBank recipe holds out, the test items after p232 and p257 (the real
  test speakers) and the training items after the other 26 training
  speakers; the true talker and recording are in the metadata. Noise is
  added at the SNRs of VoiceBank-DEMAND (0, 5, 10, 15 dB for training and
  validation; 2.5, 7.5, 12.5, 17.5 dB for test) relative to the ITU-T P.56
  active speech level.
- **MiniWHAMR** (dereverberation and joint denoising + dereverberation),
  WHAMR!'s layout::

      <out>/wav16k/min/{tr,cv,tt}/{s1_anechoic,s1_reverb,
                                   mix_single_reverb,noise}/<id>.wav
      <out>/metadata/{tr,cv,tt}.csv

  made by :mod:`speechbrain_elbo.dataprep.rooms`.

The splits are disjoint by recording (a group of joined prompts counts as one
recording) and by noise file; the pocketsphinx talkers appear only in the
test set (unseen speakers). Same seed, same bytes; a second call with the
same options does nothing; a build goes to a temporary folder that is renamed
when complete.

Command line::

    python -m speechbrain_elbo.dataprep.minidata vb --out /data/minivb
    python -m speechbrain_elbo.dataprep.minidata whamr --out /data/miniwhamr
"""

import argparse
import time
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
from speechbrain.utils.logger import get_logger
from tqdm import tqdm

from speechbrain_elbo.dataprep.rooms import RoomConfig, simulate_split
from speechbrain_elbo.dataprep.sources import (
    LICENCES,
    SAMPLE_RATE,
    active_speech_level,
    build_once,
    choose_noise,
    load_sources,
    scale_to_snr,
    write_csv_atomic,
    write_wav_atomic,
)

logger = get_logger(__name__)

#: Bumped when the content of a built data set changes for the same options.
MINIDATA_VERSION = 1

#: VoiceBank-DEMAND's folders (subset -> clean, noisy).
VB_FOLDERS = {
    "train": ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
    "test": ("clean_testset_wav", "noisy_testset_wav"),
}
#: Speaker ids used in the file names of each MiniVB split.
VB_SPEAKERS = {
    "train": (
        "p227", "p228", "p230", "p231", "p233", "p236", "p239", "p243",
        "p244", "p250", "p254", "p256", "p258", "p259", "p267", "p268",
        "p269", "p270", "p273", "p274", "p276", "p277", "p278", "p279",
        "p282", "p286",
    ),
    "valid": ("p226", "p287"),
    "test": ("p232", "p257"),
}  # fmt: skip
#: SNRs (dB) of VoiceBank-DEMAND.
VB_TRAIN_SNRS = (0.0, 5.0, 10.0, 15.0)
VB_TEST_SNRS = (2.5, 7.5, 12.5, 17.5)

#: MiniWHAMR's split folders.
WHAMR_SPLITS = {"train": "tr", "valid": "cv", "test": "tt"}

#: Packages whose talkers are kept out of training and validation.
HELDOUT_PACKAGES = ("pocketsphinx-testdata",)

#: Share of each real-noise category given to validation and to test.
NOISE_HELDOUT_SHARE = 0.15


def _rng(seed, *keys):
    """A generator seeded by ``seed`` and string/int keys."""
    parts = [seed] + [
        zlib.crc32(key.encode()) if isinstance(key, str) else key
        for key in keys
    ]
    return np.random.default_rng(parts)


def split_speech(
    clips, rng, test_items, valid_items, train_seconds, heldout=()
):
    """Splits speech clips into test, validation and training sets.

    Clips are grouped by ``group`` (recording); a group goes to one split
    only (surplus clips of a group that fills a split are left unused).
    The test set takes the talkers of ``heldout`` first, then, like the
    other splits, groups in turn from each remaining talker (round robin, a
    random order within each talker), so that every talker is represented.
    Held-out talkers never reach validation or training.

    Arguments
    ---------
    clips : list of Clip
        Speech clips.
    rng : numpy.random.Generator
        Shuffles the groups.
    test_items : int
        Number of test clips.
    valid_items : int
        Number of validation clips.
    train_seconds : float
        Training duration to reach (the last clip may overshoot).
    heldout : collection of str
        Packages whose talkers only go to the test set.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}`` lists of clips.

    Example
    -------
    >>> from speechbrain_elbo.dataprep.sources import load_fixtures
    >>> bank = load_fixtures(segment_seconds=1.0)
    >>> parts = split_speech(bank.speech, np.random.default_rng(0), 2, 2,
    ...                      3.0, heldout=("pocketsphinx-testdata",))
    >>> [len(parts[k]) for k in ("train", "valid", "test")]
    [3, 2, 2]
    >>> {c.package for c in parts["test"]}
    {'pocketsphinx-testdata'}
    """
    groups = {}
    for clip in clips:
        groups.setdefault(clip.group, []).append(clip)
    by_speaker = {}
    for name in sorted(groups):
        first = groups[name][0]
        key = (first.package in heldout, first.speaker)
        by_speaker.setdefault(key, []).append(name)
    queues = {}
    for key in sorted(by_speaker):
        names = by_speaker[key]
        queues[key] = [names[i] for i in rng.permutation(len(names))]

    def fill(speakers, items=None, seconds=None):
        taken, total = [], 0.0
        while True:
            active = [key for key in speakers if queues[key]]
            if not active:
                return taken
            for key in active:
                for clip in groups[queues[key].pop(0)]:
                    if items is not None and len(taken) >= items:
                        return taken
                    if seconds is not None and total >= seconds:
                        return taken
                    taken.append(clip)
                    total += clip.num_samples / SAMPLE_RATE
                if (items is not None and len(taken) >= items) or (
                    seconds is not None and total >= seconds
                ):
                    return taken

    held = [key for key in queues if key[0]]
    others = [key for key in queues if not key[0]]
    test = fill(held, items=test_items)
    if len(test) < test_items:
        test += fill(others, items=test_items - len(test))
    valid = fill(others, items=valid_items)
    train = fill(others, seconds=train_seconds)
    got = {"test": len(test), "valid": len(valid)}
    for name, wanted in (("test", test_items), ("valid", valid_items)):
        if got[name] < wanted:
            logger.warning(
                f"Only {got[name]} of the {wanted} {name} items could be "
                "filled from the available speech."
            )
    seconds = sum(c.num_samples for c in train) / SAMPLE_RATE
    if seconds < train_seconds:
        logger.warning(
            f"Only {seconds / 60:.1f} of the {train_seconds / 60:.1f} "
            "training minutes could be filled from the available speech."
        )
    return {"train": train, "valid": valid, "test": test}


def split_noise(clips, rng, heldout_share=NOISE_HELDOUT_SHARE):
    """Splits noise files into disjoint sets, per category.

    In each category, a random ``heldout_share`` of the files (at least one)
    goes to test and as many to validation when there are three files or
    more; with two files, one goes to training and one to test; a single
    file goes to training. A split without real noise of some category
    simply uses the others (and synthetic noise).

    Arguments
    ---------
    clips : list of Clip
        Noise clips (``speaker`` is the category).
    rng : numpy.random.Generator
        Shuffles the files.
    heldout_share : float
        Share of validation and of test files.

    Returns
    -------
    dict
        ``{"train": [...], "valid": [...], "test": [...]}``.

    Example
    -------
    >>> from speechbrain_elbo.dataprep.sources import load_fixtures
    >>> parts = split_noise(load_fixtures().noise, np.random.default_rng(0))
    >>> [len(parts[k]) for k in ("train", "valid", "test")]
    [1, 0, 1]
    """
    parts = {"train": [], "valid": [], "test": []}
    categories = sorted({clip.speaker for clip in clips})
    for category in categories:
        files = sorted(
            (c for c in clips if c.speaker == category), key=lambda c: c.uid
        )
        files = [files[i] for i in rng.permutation(len(files))]
        if len(files) >= 3:
            n = max(1, round(heldout_share * len(files)))
            parts["test"] += files[:n]
            parts["valid"] += files[n : 2 * n]
            parts["train"] += files[2 * n :]
        elif len(files) == 2:
            parts["test"].append(files[0])
            parts["train"].append(files[1])
        else:
            parts["train"] += files
    return parts


def _pseudo_names(clips, split):
    """VoiceBank-style names ``pXXX_NNN`` for the clips of a split."""
    ids = VB_SPEAKERS[split]
    speakers = sorted({clip.speaker for clip in clips})
    mapping = {spk: ids[rank % len(ids)] for rank, spk in enumerate(speakers)}
    counters, names = {}, []
    for clip in clips:
        pid = mapping[clip.speaker]
        counters[pid] = counters.get(pid, 0) + 1
        names.append(f"{pid}_{counters[pid]:03d}")
    return names


def _sources_text(kind, bank, counts):
    """The SOURCES.md of a built data set."""
    pairs = sorted(
        {(c.package, c.licence) for c in bank.speech + bank.noise}
        | {("synthetic", LICENCES["synthetic"])}
    )
    lines = [
        f"# {kind}: where the audio comes from",
        "",
        "Generated by speechbrain_elbo.dataprep.minidata from the recordings "
        f"listed below ({bank.origin}). The recordings were MODIFIED: "
        "resampled to 16 kHz mono, trimmed, joined, rescaled, mixed with "
        "noise"
        + (" and reverberated in simulated rooms" if "WHAMR" in kind else "")
        + ". metadata/*.csv names the source file, package and licence of "
        "every item.",
        "",
        "| package | licence |",
        "|---|---|",
    ]
    for package, licence in pairs:
        lines.append(f"| {package} | {licence} |")
    lines += [
        "",
        "Items per split: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
    ]
    return "\n".join(lines)


def _check_sizes(train_minutes, valid_items, test_items):
    if train_minutes <= 0 or valid_items < 1 or test_items < 1:
        raise ValueError(
            "train_minutes must be positive and valid_items, test_items at "
            f"least 1 (got {train_minutes}, {valid_items}, {test_items})."
        )


def _mix_vb_split(clips, noise, names, root, split, seed, snrs, options):
    """Writes the clean/noisy pairs of one MiniVB split; returns rows."""
    clean_dir, noisy_dir = VB_FOLDERS["test" if split == "test" else "train"]
    rows = []
    pairs = list(zip(clips, names, strict=True))
    for index, (clip, name) in enumerate(
        tqdm(pairs, desc=f"MiniVB {split}", disable=not options["progress"])
    ):
        rng = _rng(seed, "minivb", split, index)
        speech = clip.read().astype(np.float64)
        level, _ = active_speech_level(speech)
        if level <= 0:
            raise ValueError(f"{clip.path} is silent; remove it.")
        level_db = rng.uniform(*options["level_range"])
        speech *= np.sqrt(10 ** (level_db / 10) / level)
        snr = float(snrs[int(rng.integers(len(snrs)))])
        wav, info = choose_noise(
            noise, speech.size, rng, options["synthetic_share"]
        )
        noisy = speech + scale_to_snr(10 ** (level_db / 10), wav, snr)
        peak = max(np.max(np.abs(noisy)), np.max(np.abs(speech)))
        gain = min(1.0, 0.99 / peak)
        write_wav_atomic(root / clean_dir / f"{name}.wav", speech * gain)
        write_wav_atomic(root / noisy_dir / f"{name}.wav", noisy * gain)
        row = {
            "id": name,
            "split": split,
            "spk_id": name.split("_")[0],
            "speaker": clip.speaker,
            "source": f"{clip.package}:{clip.source}",
            "licence": clip.licence,
            "clip": clip.uid,
            "clip_start": clip.start,
            "clip_stop": clip.stop,
            "snr_db": snr,
            "level_dbfs": round(level_db + 20 * np.log10(gain), 3),
            "gain": round(gain, 5),
            "duration_s": round(speech.size / SAMPLE_RATE, 4),
        }
        row.update(info)
        rows.append(row)
    write_csv_atomic(root / "metadata" / f"{split}.csv", rows)
    return rows


def build_minivb(
    out_dir,
    bank=None,
    seed=1234,
    train_minutes=60.0,
    valid_items=60,
    test_items=100,
    train_snrs=VB_TRAIN_SNRS,
    test_snrs=VB_TEST_SNRS,
    level_range=(-30.0, -20.0),
    synthetic_share=0.2,
    cache_dir=None,
    overwrite=False,
    progress=True,
):
    """Builds MiniVB, a VoiceBank-DEMAND-shaped denoising set.

    Arguments
    ---------
    out_dir : str or pathlib.Path
        Output folder.
    bank : SourceBank or None
        Speech and noise (default: :func:`~.sources.load_sources`, i.e. the
        Debian packages, or the fixtures if apt is unavailable).
    seed : int
        Seed of every random choice.
    train_minutes : float
        Training duration (validation comes on top, as in VoiceBank).
    valid_items : int
        Validation items (named p226/p287, in the training folders).
    test_items : int
        Test items.
    train_snrs : tuple of float
        SNRs (dB) of training and validation items.
    test_snrs : tuple of float
        SNRs (dB) of test items.
    level_range : tuple of float
        Range of the clean speech's active level (dBFS).
    synthetic_share : float
        Probability of synthetic instead of real noise.
    cache_dir : str or pathlib.Path or None
        Cache of the Debian packages (when ``bank`` is None).
    overwrite : bool
        Rebuild a folder built with other options.
    progress : bool
        Show progress bars.

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Example
    -------
    >>> from speechbrain_elbo.dataprep.sources import load_fixtures
    >>> out = getfixture("tmp_path") / "minivb"
    >>> _ = build_minivb(out, load_fixtures(segment_seconds=1.0),
    ...                  train_minutes=0.02, valid_items=1, test_items=1,
    ...                  progress=False)
    >>> sorted(p.name for p in (out / "clean_testset_wav").iterdir())
    ['p232_001.wav']
    """
    _check_sizes(train_minutes, valid_items, test_items)
    bank = bank if bank is not None else load_sources(cache_dir)
    options = {
        "kind": "MiniVB",
        "version": MINIDATA_VERSION,
        "sources": bank.origin,
        "fallback": bank.fallback,
        "fingerprint": bank.fingerprint(),
        "seed": seed,
        "train_minutes": train_minutes,
        "valid_items": valid_items,
        "test_items": test_items,
        "train_snrs": list(train_snrs),
        "test_snrs": list(test_snrs),
        "level_range": list(level_range),
        "synthetic_share": synthetic_share,
    }

    def build(root):
        speech = split_speech(
            bank.speech,
            _rng(seed, "speech"),
            test_items,
            valid_items,
            train_minutes * 60,
            HELDOUT_PACKAGES,
        )
        noise = split_noise(bank.noise, _rng(seed, "noise"))
        settings = dict(options, progress=progress)
        counts = {}
        for split in ("train", "valid", "test"):
            names = _pseudo_names(speech[split], split)
            snrs = test_snrs if split == "test" else train_snrs
            rows = _mix_vb_split(
                speech[split],
                noise[split],
                names,
                root,
                split,
                seed,
                snrs,
                settings,
            )
            counts[split] = len(rows)
        (root / "SOURCES.md").write_text(_sources_text("MiniVB", bank, counts))

    build_once(out_dir, options, build, overwrite)
    return Path(out_dir)


def build_miniwhamr(
    out_dir,
    bank=None,
    seed=1234,
    train_minutes=60.0,
    valid_items=60,
    test_items=100,
    snr_range=(0.0, 15.0),
    level_range=(-30.0, -20.0),
    synthetic_share=0.2,
    room_config=None,
    cache_dir=None,
    overwrite=False,
    progress=True,
):
    """Builds MiniWHAMR, a WHAMR!-shaped dereverberation (+ noise) set.

    Arguments
    ---------
    out_dir : str or pathlib.Path
        Output folder.
    bank : SourceBank or None
        Speech and noise (default: :func:`~.sources.load_sources`).
    seed : int
        Seed of every random choice.
    train_minutes : float
        Training (``tr``) duration.
    valid_items : int
        Validation (``cv``) items.
    test_items : int
        Test (``tt``) items.
    snr_range : tuple of float
        SNR range (dB) of the noise relative to the reverberant speech
        (WHAMR! itself: about -6 to 3 dB).
    level_range : tuple of float
        Range of the reverberant speech's active level (dBFS).
    synthetic_share : float
        Probability of synthetic instead of real noise.
    room_config : RoomConfig or None
        Room distribution (default: RT60 0.2-1.0 s).
    cache_dir : str or pathlib.Path or None
        Cache of the Debian packages (when ``bank`` is None).
    overwrite : bool
        Rebuild a folder built with other options.
    progress : bool
        Show progress bars.

    Returns
    -------
    pathlib.Path
        ``out_dir``.
    """
    _check_sizes(train_minutes, valid_items, test_items)
    bank = bank if bank is not None else load_sources(cache_dir)
    room_config = room_config or RoomConfig()
    options = {
        "kind": "MiniWHAMR",
        "version": MINIDATA_VERSION,
        "sources": bank.origin,
        "fallback": bank.fallback,
        "fingerprint": bank.fingerprint(),
        "seed": seed,
        "train_minutes": train_minutes,
        "valid_items": valid_items,
        "test_items": test_items,
        "snr_range": list(snr_range),
        "level_range": list(level_range),
        "synthetic_share": synthetic_share,
        "rooms": asdict(room_config),
    }

    def build(root):
        speech = split_speech(
            bank.speech,
            _rng(seed, "speech"),
            test_items,
            valid_items,
            train_minutes * 60,
            HELDOUT_PACKAGES,
        )
        noise = split_noise(bank.noise, _rng(seed, "noise"))
        counts = {}
        for split, folder in WHAMR_SPLITS.items():
            rows = simulate_split(
                speech[split],
                noise[split],
                root,
                folder,
                seed=seed,
                config=room_config,
                snr_range=snr_range,
                level_range=level_range,
                synthetic_share=synthetic_share,
                progress=progress,
            )
            counts[folder] = len(rows)
        text = _sources_text("MiniWHAMR", bank, counts)
        (root / "SOURCES.md").write_text(text)

    build_once(out_dir, options, build, overwrite)
    return Path(out_dir)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_elbo.dataprep.minidata",
        description="Builds MiniVB (VoiceBank-DEMAND layout) and/or "
        "MiniWHAMR (WHAMR! layout) from real recordings of Debian packages.",
    )
    parser.add_argument(
        "which",
        choices=("vb", "whamr", "all"),
        help="vb: MiniVB; whamr: MiniWHAMR; all: both, in OUT/minivb and "
        "OUT/miniwhamr",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--cache-dir",
        help="cache of the Debian packages (default "
        "~/.cache/speechbrain_elbo/sources)",
    )
    parser.add_argument(
        "--samples-dir",
        help="use the fixtures of this folder (e.g. "
        "tests/samples) instead of the Debian packages",
    )
    parser.add_argument(
        "--segment-seconds",
        type=float,
        default=2.0,
        help="with --samples-dir: cut the fixtures into clips of this length",
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="same seed, same bytes"
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=60.0,
        help="training duration in minutes (default 60)",
    )
    parser.add_argument(
        "--valid-items",
        type=int,
        default=60,
        help="validation utterances (default 60)",
    )
    parser.add_argument(
        "--test-items",
        type=int,
        default=100,
        help="test utterances (default 100)",
    )
    parser.add_argument(
        "--snr",
        nargs=2,
        type=float,
        default=(0.0, 15.0),
        metavar=("LOW", "HIGH"),
        help="MiniWHAMR SNR range in dB (WHAMR!: -6 3)",
    )
    parser.add_argument(
        "--rt60",
        nargs=2,
        type=float,
        default=(0.2, 1.0),
        metavar=("LOW", "HIGH"),
        help="MiniWHAMR RT60 range in seconds",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="rebuild a folder that was built with other options",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide progress bars"
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
    list of pathlib.Path
        The folders built.
    """
    args = _parser().parse_args(argv)
    begin = time.perf_counter()
    bank = load_sources(
        args.cache_dir, args.samples_dir, segment_seconds=args.segment_seconds
    )
    minutes = sum(c.num_samples for c in bank.speech) / SAMPLE_RATE / 60
    print(
        f"Sources ready in {time.perf_counter() - begin:.1f} s: "
        f"{len(bank.speech)} speech clips ({minutes:.1f} min), "
        f"{len(bank.noise)} noise files, from {bank.origin}"
    )
    common = {
        "bank": bank,
        "seed": args.seed,
        "train_minutes": args.train_minutes,
        "valid_items": args.valid_items,
        "test_items": args.test_items,
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
    }
    whamr = {
        "snr_range": tuple(args.snr),
        "room_config": RoomConfig(rt60_range=tuple(args.rt60)),
    }
    out = Path(args.out)
    jobs = {
        "vb": [(build_minivb, out, {})],
        "whamr": [(build_miniwhamr, out, whamr)],
        "all": [
            (build_minivb, out / "minivb", {}),
            (build_miniwhamr, out / "miniwhamr", whamr),
        ],
    }[args.which]
    built = []
    for builder, folder, extra in jobs:
        begin = time.perf_counter()
        built.append(builder(folder, **common, **extra))
        files = [p for p in folder.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files) / 1e6
        print(
            f"{folder} ready in {time.perf_counter() - begin:.1f} s: "
            f"{len(files)} files, {size:.0f} MB"
        )
    return built


if __name__ == "__main__":
    main()
