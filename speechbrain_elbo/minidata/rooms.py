"""Room simulation: clean 16 kHz speech to the WHAMR! layout.

For users without WHAMR! (and for MiniWHAMR), this module reverberates any
folder of clean speech in simulated shoebox rooms
(:mod:`speechbrain_elbo.minidata.acoustics`) and optionally adds noise:

- ``s1_reverb``: speech convolved with the room impulse response (RIR);
- ``s1_anechoic``: the dereverberation target, speech convolved with the
  direct path of the same RIR plus the following 2.5 ms, aligned sample by
  sample with ``s1_reverb``, as WHAMR!'s ``s1_anechoic``;
- ``noise``: the scaled noise, and ``mix_single_reverb`` = ``s1_reverb`` +
  ``noise``.

The measured RT60 and the direct-to-reverberant ratio (DRR) of each room go
into ``metadata/<split>.csv``.

Command line::

    python -m speechbrain_elbo.minidata.rooms --speech CLEAN_DIR --out OUT \\
        [--noise NOISE_DIR] [--split tt] [--seed 0] [--rt60 0.2 1.0]
"""

import argparse
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechbrain_elbo.fileio import (
    replace_folder,
    write_audio_atomic,
    write_csv_atomic,
    write_json_atomic,
)
from speechbrain_elbo.minidata.acoustics import (
    RoomConfig,
    reverberate,
    simulate_room,
)
from speechbrain_elbo.minidata.clips import choose_noise, clips_from_folder
from speechbrain_elbo.minidata.folders import (
    STAMP_NAME,
    already_built,
    as_json,
)
from speechbrain_elbo.minidata.signals import (
    SAMPLE_RATE,
    active_speech_level,
    check_full_scale,
    scale_to_snr,
    seeded_rng,
)

#: WHAMR! sub-folders written for each split.
WHAMR_FOLDERS = ("s1_anechoic", "s1_reverb", "mix_single_reverb", "noise")

#: Peak that no written signal exceeds (a common gain is applied).
MAX_PEAK = 0.99


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
    (:func:`~speechbrain_elbo.minidata.clips.choose_noise`) added at an
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

    Example
    -------
    >>> from speechbrain_elbo.minidata.clips import load_fixtures
    >>> root = getfixture("tmp_path")
    >>> rows = simulate_split(load_fixtures().speech[:1], [], root, "cv",
    ...                       config=RoomConfig(rt60_range=(0.2, 0.3)),
    ...                       progress=False)
    >>> rows[0]["id"], rows[0]["noise_type"] in ("white", "pink", "brown")
    ('cv00000_speech_ru', True)
    >>> sorted(p.name for p in (root / "wav16k/min/cv/noise").iterdir())
    ['cv00000_speech_ru.wav']
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
        rng = seeded_rng(seed, split, index)
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
            path = folders[name] / f"{uid}.wav"
            check_full_scale(signal * rescale, path)
            write_audio_atomic(path, signal * rescale, SAMPLE_RATE, "PCM_16")
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
    >>> from speechbrain_elbo.minidata.clips import DEFAULT_SAMPLES
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
    options = as_json(options)
    split_dir = out_dir / "wav16k" / "min" / split
    csv_path = out_dir / "metadata" / f"{split}.csv"
    stamp = out_dir / "metadata" / f"{split}.{STAMP_NAME}"
    if already_built(split_dir, stamp, options, overwrite):
        return csv_path
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
        replace_folder(tmp / "wav16k" / "min" / split, split_dir)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "metadata" / f"{split}.csv").replace(csv_path)
        write_json_atomic(stamp, options, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return csv_path


def add_range_options(parser, prefix=""):
    """Adds the ``--rt60`` and ``--snr`` ranges (LOW HIGH) to a parser.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        The parser of a command line.
    prefix : str
        Put before each help text (e.g. ``"MiniWHAMR "``).

    Example
    -------
    >>> parser = argparse.ArgumentParser()
    >>> add_range_options(parser)
    >>> args = parser.parse_args(["--snr", "-6", "3"])
    >>> args.snr, args.rt60
    ([-6.0, 3.0], (0.2, 1.0))
    """
    ranges = (
        ("--rt60", (0.2, 1.0), "measured RT60 range in seconds"),
        ("--snr", (0.0, 15.0), "SNR range in dB (WHAMR!: -6 3)"),
    )
    for flag, default, text in ranges:
        parser.add_argument(
            flag,
            nargs=2,
            type=float,
            default=default,
            metavar=("LOW", "HIGH"),
            help=prefix + text,
        )


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m speechbrain_elbo.minidata.rooms",
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
    add_range_options(parser)
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
