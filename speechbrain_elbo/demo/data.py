"""The demo's data: the MiniVB test split, built when missing, and its items.

- :func:`prepare_demo_data`: make sure a folder holds a MiniVB test split
  of enough items (built with :func:`speechbrain_elbo.minidata.build_minivb`
  from the Debian audio packages, or from the committed fixtures);
- :func:`load_test_items`: the (noisy, clean) file pairs of a MiniVB or
  VoiceBank-DEMAND split, in the manifest's order;
- :func:`read_mono`: one file as a mono waveform at the model's rate.

Example
-------
>>> import soundfile as sf
>>> folder = getfixture("tmp_path")
>>> for sub in ("noisy_testset_wav", "clean_testset_wav"):
...     (folder / sub).mkdir()
...     sf.write(folder / sub / "p232_001.wav", [0.1] * 800, 8000)
>>> [item["id"] for item in load_test_items(folder)]
['p232_001']
>>> read_mono(folder / "noisy_testset_wav" / "p232_001.wav", 16000).shape
torch.Size([1600])
"""

import csv
import json
import pathlib

from speechbrain_elbo.audio_input import load_waveform
from speechbrain_elbo.fileio import audio_info

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_ITEMS",
    "prepare_demo_data",
    "load_test_items",
    "read_mono",
]

#: Where the demo's MiniVB test split is built (kept between runs).
DEFAULT_DATA = "results/demo_data/minivb-test"
#: Test items enhanced by default: with the small configuration at 20
#: network evaluations, about 3.5 minutes of CPU time (docs/demo.md has the
#: measurement).
DEFAULT_ITEMS = 24
#: The demo build of MiniVB needs only its test split, but build_minivb
#: always writes all three splits: these keep the other two tiny. The test
#: split does not depend on them (it is filled first, item by item).
DEMO_TRAIN_MINUTES = 0.05
DEMO_VALID_ITEMS = 4

#: Folders of each split in VoiceBank-DEMAND's layout (noisy, clean).
_FOLDERS = {
    "test": ("noisy_testset_wav", "clean_testset_wav"),
    "valid": ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
}


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _stamp(data_dir):
    path = pathlib.Path(data_dir) / "minidata.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _is_demo_build(stamp):
    return (
        stamp is not None
        and stamp.get("kind") == "MiniVB"
        and float(stamp.get("train_minutes", -1)) == DEMO_TRAIN_MINUTES
    )


def _test_items_present(data_dir):
    """Test items in the folder (manifest, else WAV files), None if none."""
    test_csv = data_dir / "metadata" / "test.csv"
    if test_csv.is_file():
        return len(_read_rows(test_csv))
    noisy_dir = data_dir / _FOLDERS["test"][0]
    if noisy_dir.is_dir():
        return len(list(noisy_dir.glob("*.wav")))
    return None


def prepare_demo_data(
    data_dir,
    items=DEFAULT_ITEMS,
    cache_dir=None,
    samples_dir=None,
    seed=1234,
    progress=True,
):
    """Make sure ``data_dir`` holds a MiniVB test split of ``items`` items.

    A folder that already holds a MiniVB (or VoiceBank-DEMAND) test split is
    used as it is when it has enough items or is not a demo build (a full
    MiniVB is never rebuilt). Otherwise MiniVB is built with
    :func:`speechbrain_elbo.minidata.build_minivb`: ``build_minivb`` always
    writes the three splits, so the demo asks for a training split of a few
    seconds and a handful of validation items. The test split is filled
    first and item by item, so its first ``items`` utterances are the same
    audio as those of the default build (only their ``pXXX`` names can
    differ when few talkers are present).

    The sources are the Debian packages, fetched with ``apt-get`` into the
    cache (about 150 s and 326 MB the first time), or the committed fixtures
    when apt is not available (a loud banner; the build is tiny).

    Arguments
    ---------
    data_dir : str or pathlib.Path
        The MiniVB folder.
    items : int
        Test items wanted.
    cache_dir : str or pathlib.Path, optional
        Cache of the Debian packages (default: ``$SPEECHBRAIN_ELBO_SOURCES``
        or ``~/.cache/speechbrain_elbo/sources``).
    samples_dir : str or pathlib.Path, optional
        Use these fixtures instead of the Debian packages.
    seed : int
        Seed of the build.
    progress : bool
        Progress bars.

    Returns
    -------
    dict
        ``dir``, ``origin`` (``"debian"`` or the fixture folder),
        ``fallback`` (True when apt failed and the fixtures were used),
        ``built_now``, ``test_items`` (available).

    Example
    -------
    >>> from speechbrain_elbo.minidata import DEFAULT_SAMPLES
    >>> info = prepare_demo_data(getfixture("tmp_path") / "vb", items=2,
    ...                          samples_dir=DEFAULT_SAMPLES, progress=False)
    >>> info["test_items"], info["built_now"], info["fallback"]
    (2, True, False)
    """
    from speechbrain_elbo.minidata import build_minivb, load_sources

    if items < 1:
        raise ValueError(f"items must be >= 1, got {items}.")
    data_dir = pathlib.Path(data_dir)
    stamp = _stamp(data_dir)
    have = _test_items_present(data_dir)
    enough = have is not None and (
        have >= items
        or not _is_demo_build(stamp)
        or int(stamp.get("test_items", 0)) >= items
    )
    built = False
    if not enough:
        if samples_dir is None and have is None:
            print(
                f"Building the MiniVB test split ({items} items) in "
                f"{data_dir} from the Debian audio packages (fetched once "
                "into the cache) ...",
                flush=True,
            )
        bank = load_sources(cache_dir, samples_dir)
        built = build_minivb(
            data_dir,
            bank,
            seed=seed,
            train_minutes=DEMO_TRAIN_MINUTES,
            valid_items=DEMO_VALID_ITEMS,
            test_items=items,
            overwrite=_is_demo_build(stamp),
            progress=progress,
        ).is_dir()
        stamp = _stamp(data_dir)
    return {
        "dir": str(data_dir.absolute()),
        "origin": (stamp or {}).get("sources", "existing folder"),
        "fallback": bool((stamp or {}).get("fallback", False)),
        "built_now": built,
        "test_items": len(load_test_items(data_dir)),
    }


def _pairs_from_folders(noisy_dir, clean_dir, ids=None):
    if ids is None:
        ids = sorted(p.stem for p in pathlib.Path(noisy_dir).glob("*.wav"))
    pairs = []
    for uid in ids:
        noisy = pathlib.Path(noisy_dir) / f"{uid}.wav"
        clean = pathlib.Path(clean_dir) / f"{uid}.wav"
        if not noisy.is_file() or not clean.is_file():
            raise FileNotFoundError(
                f"{noisy} or {clean} is missing: the data folder is "
                "incomplete. Delete it and run the demo again to rebuild it."
            )
        pairs.append({"id": uid, "noisy": str(noisy), "clean": str(clean)})
    return pairs


def load_test_items(data_dir, max_items=None, split="test"):
    """The (noisy, clean) pairs of a MiniVB or VoiceBank-DEMAND split.

    Arguments
    ---------
    data_dir : str or pathlib.Path
        A folder in VoiceBank-DEMAND's layout (``noisy_testset_wav``,
        ``clean_testset_wav``; MiniVB adds ``metadata/{split}.csv``, whose
        order and SNRs are used).
    max_items : int, optional
        Keep the first ones.
    split : str
        ``"test"`` or ``"valid"`` (MiniVB's validation items, in the
        training folders; needs ``metadata/valid.csv``).

    Returns
    -------
    list of dict
        ``id``, ``noisy``, ``clean`` (paths) and ``snr_db`` when known.

    Example
    -------
    >>> load_test_items(getfixture("tmp_path"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...no test split...
    """
    data_dir = pathlib.Path(data_dir)
    if split not in _FOLDERS:
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}.")
    noisy_dir, clean_dir = (data_dir / f for f in _FOLDERS[split])
    manifest = data_dir / "metadata" / f"{split}.csv"
    if manifest.is_file():
        rows = _read_rows(manifest)
        pairs = _pairs_from_folders(
            noisy_dir, clean_dir, [row["id"] for row in rows]
        )
        for pair, row in zip(pairs, rows, strict=True):
            if row.get("snr_db"):
                pair["snr_db"] = float(row["snr_db"])
    elif split == "test" and noisy_dir.is_dir():
        pairs = _pairs_from_folders(noisy_dir, clean_dir)
    else:
        raise FileNotFoundError(
            f"{data_dir} holds no {split} split (neither {manifest} nor "
            f"{noisy_dir}). Build MiniVB there (python -m "
            "speechbrain_elbo.minidata vb --out DIR) or point to a "
            "VoiceBank-DEMAND folder."
        )
    return pairs if max_items is None else pairs[:max_items]


def read_mono(path, sample_rate):
    """A file as a mono float32 waveform (L,) at ``sample_rate``.

    Channels are averaged; another rate is resampled.

    Arguments
    ---------
    path : str or pathlib.Path
        Audio file.
    sample_rate : int
        The rate wanted (the model's).

    Returns
    -------
    torch.Tensor
    """
    wav = load_waveform(path, mix_down=True)
    rate = audio_info(path).sample_rate
    if rate != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(wav, rate, sample_rate)
    return wav
