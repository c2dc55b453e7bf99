"""The demo's data: a mini test split, built when missing, and its items.

- :data:`TASKS`: the two demos, denoising (MiniVB, the bundled
  ``minivb-small``) and dereverberation (MiniWHAMR, ``miniwhamr-small``);
- :func:`prepare_demo_data`: make sure a folder holds the test split of a
  task's mini corpus with enough items (built with
  :func:`speechbrain_elbo.minidata.build_minivb` or
  :func:`~speechbrain_elbo.minidata.build_miniwhamr` from the Debian audio
  packages, or from the committed fixtures);
- :func:`load_test_items`: the (input, clean) file pairs of a split of
  MiniVB or VoiceBank-DEMAND (the noisy input) or of MiniWHAMR or WHAMR!
  (the reverberant input ``s1_reverb``), in the manifest's order;
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
import dataclasses
import json
import pathlib

from speechbrain_elbo.audio_input import load_waveform
from speechbrain_elbo.fileio import audio_info

__all__ = [
    "DemoTask",
    "TASKS",
    "DEFAULT_DATA",
    "DEFAULT_ITEMS",
    "prepare_demo_data",
    "load_test_items",
    "read_mono",
]


@dataclasses.dataclass(frozen=True)
class DemoTask:
    """One demo: its mini corpus, bundled model and default folders.

    Attributes
    ----------
    name : str
        ``denoise`` or ``dereverb``.
    corpus : str
        The mini corpus (``kind`` of its ``minidata.json``).
    model : str
        The bundled model it runs by default.
    data : str
        Where its test split is built (kept between runs).
    out : str
        Where its report is written.
    input_label : str
        What the input is, in the report.
    """

    name: str
    corpus: str
    model: str
    data: str
    out: str
    input_label: str


#: The demos by name: ``make demo`` (denoising) and ``make demo
#: TASK=dereverb``.
TASKS = {
    "denoise": DemoTask(
        "denoise",
        "MiniVB",
        "minivb-small",
        "results/demo_data/minivb-test",
        "results/demo",
        "noisy input",
    ),
    "dereverb": DemoTask(
        "dereverb",
        "MiniWHAMR",
        "miniwhamr-small",
        "results/demo_data/miniwhamr-test",
        "results/demo-dereverb",
        "reverberant input",
    ),
}

#: Where the denoising demo's MiniVB test split is built.
DEFAULT_DATA = TASKS["denoise"].data
#: Test items enhanced by default: with the small configuration at 20
#: network evaluations, about 3.5 minutes of CPU time (docs/demo.md has the
#: measurement).
DEFAULT_ITEMS = 24
#: The demo build needs only the test split, but the builders always write
#: all three splits: these keep the other two tiny. The test split does not
#: depend on them (it is filled first, item by item).
DEMO_TRAIN_MINUTES = 0.05
DEMO_VALID_ITEMS = 4

#: Folders of each split in VoiceBank-DEMAND's layout (noisy, clean).
_FOLDERS = {
    "test": ("noisy_testset_wav", "clean_testset_wav"),
    "valid": ("noisy_trainset_28spk_wav", "clean_trainset_28spk_wav"),
}

#: WHAMR!'s split folders, and its (input, target) of dereverberation.
_WHAMR_SPLITS = {"test": "tt", "valid": "cv"}
_WHAMR_PAIR = ("s1_reverb", "s1_anechoic")

#: Manifest columns kept in the items, (column, key), by layout: MiniVB's
#: SNR; MiniWHAMR's measured room acoustics (its SNR is that of the noisy
#: mixture, not of the reverberant speech that dereverberation takes).
_CONDITIONS = {
    False: (("snr_db", "snr_db"),),
    True: (("rt60", "rt60_s"), ("drr", "drr_db")),
}


def _layout(data_dir, split):
    """(input folder, clean folder, manifest) of a split of a folder in
    WHAMR!'s layout (``wav16k/``) or else VoiceBank-DEMAND's."""
    whamr = data_dir / "wav16k" / "min" / _WHAMR_SPLITS[split]
    if (data_dir / "wav16k").is_dir():
        folders = tuple(whamr / name for name in _WHAMR_PAIR)
        manifest = data_dir / "metadata" / f"{_WHAMR_SPLITS[split]}.csv"
    else:
        folders = tuple(data_dir / name for name in _FOLDERS[split])
        manifest = data_dir / "metadata" / f"{split}.csv"
    return (*folders, manifest)


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _stamp(data_dir):
    path = pathlib.Path(data_dir) / "minidata.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _is_demo_build(stamp, task):
    return (
        stamp is not None
        and stamp.get("kind") == task.corpus
        and float(stamp.get("train_minutes", -1)) == DEMO_TRAIN_MINUTES
    )


def _test_items_present(data_dir):
    """Test items in the folder (manifest, else WAV files), None if none."""
    noisy_dir, _, test_csv = _layout(data_dir, "test")
    if test_csv.is_file():
        return len(_read_rows(test_csv))
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
    task="denoise",
):
    """Make sure ``data_dir`` holds a test split of ``items`` items.

    The split is the task's mini corpus: MiniVB for ``denoise``, MiniWHAMR
    for ``dereverb`` (:data:`TASKS`). A folder that already holds a test
    split (of the mini corpus or of the full one in its layout) is used as
    it is when it has enough items or is not a demo build (a full build is
    never rebuilt). Otherwise the corpus is built with its builder, which
    always writes the three splits, so the demo asks for a training split
    of a few seconds and a handful of validation items. The test split is
    filled first and item by item, so its first ``items`` utterances are
    the same audio as those of the default build (only MiniVB's ``pXXX``
    names can differ when few talkers are present).

    The sources are the Debian packages, fetched with ``apt-get`` into the
    cache (about 150 s and 326 MB the first time), or the committed fixtures
    when apt is not available (a loud banner; the build is tiny).

    Arguments
    ---------
    data_dir : str or pathlib.Path
        The corpus folder.
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
    task : str
        ``denoise`` or ``dereverb`` (a key of :data:`TASKS`).

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
    from speechbrain_elbo.minidata import (
        build_minivb,
        build_miniwhamr,
        load_sources,
    )

    if task not in TASKS:
        raise ValueError(
            f"task must be one of {', '.join(TASKS)}, got {task!r}."
        )
    task = TASKS[task]
    if items < 1:
        raise ValueError(f"items must be >= 1, got {items}.")
    data_dir = pathlib.Path(data_dir)
    stamp = _stamp(data_dir)
    have = _test_items_present(data_dir)
    demo_build = _is_demo_build(stamp, task)
    enough = have is not None and (
        have >= items
        or not demo_build
        or int(stamp.get("test_items", 0)) >= items
    )
    built = False
    if not enough:
        if samples_dir is None and have is None:
            print(
                f"Building the {task.corpus} test split ({items} items) in "
                f"{data_dir} from the Debian audio packages (fetched once "
                "into the cache) ...",
                flush=True,
            )
        bank = load_sources(cache_dir, samples_dir)
        builder = build_miniwhamr if task.name == "dereverb" else build_minivb
        built = builder(
            data_dir,
            bank,
            seed=seed,
            train_minutes=DEMO_TRAIN_MINUTES,
            valid_items=DEMO_VALID_ITEMS,
            test_items=items,
            overwrite=demo_build,
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
    """The (input, clean) pairs of a split of a mini or full corpus.

    Arguments
    ---------
    data_dir : str or pathlib.Path
        A folder in VoiceBank-DEMAND's layout (``noisy_testset_wav``,
        ``clean_testset_wav``; MiniVB adds ``metadata/{split}.csv``, whose
        order and SNRs are used) or in WHAMR!'s (``wav16k/min/tt/s1_reverb``
        and ``s1_anechoic``, the dereverberation pair; MiniWHAMR adds
        ``metadata/tt.csv`` with the measured RT60 and DRR of each room).
    max_items : int, optional
        Keep the first ones.
    split : str
        ``"test"`` or ``"valid"`` (the mini corpus' validation items; needs
        its manifest).

    Returns
    -------
    list of dict
        ``id``, ``noisy`` (the input's path, noisy or reverberant),
        ``clean`` and, when known, ``snr_db`` or ``rt60_s`` and ``drr_db``.

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
    noisy_dir, clean_dir, manifest = _layout(data_dir, split)
    if manifest.is_file():
        rows = _read_rows(manifest)
        pairs = _pairs_from_folders(
            noisy_dir, clean_dir, [row["id"] for row in rows]
        )
        for pair, row in zip(pairs, rows, strict=True):
            for column, key in _CONDITIONS[(data_dir / "wav16k").is_dir()]:
                if row.get(column):
                    pair[key] = float(row[column])
    elif split == "test" and noisy_dir.is_dir():
        pairs = _pairs_from_folders(noisy_dir, clean_dir)
    else:
        raise FileNotFoundError(
            f"{data_dir} holds no {split} split (neither {manifest} nor "
            f"{noisy_dir}). Build a mini corpus there (python -m "
            "speechbrain_elbo.minidata vb|whamr --out DIR) or point to a "
            "VoiceBank-DEMAND or WHAMR! folder."
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
