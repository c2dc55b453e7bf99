"""Tests of the WHAMR! preparation on fake corpora in tmp_path."""

import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from speechbrain_elbo.dataprep import prepare_whamr
from speechbrain_elbo.dataprep.whamr import MARKER_NAME, SPLITS

FOLDERS = ("s1_anechoic", "s1_reverb", "mix_single_reverb")
IDS = {
    "tr": ["011a0101_0.5_22go010x_-0.5", "40na010x_1.2_01zo030l_-1.2"],
    "cv": ["01ac0201_0.3_20ga010c_-0.3"],
    "tt": ["050a0501_1.7_442o030z_-1.7", "22ga010b_0.9_051o020s_-0.9"],
}


def make_tree(root, rate_folder="wav16k", rate=16000, version="min", seed=0):
    """Fake WHAMR!: returns {utt_id: frames}; each folder has its own
    constant so that the manifests' paths can be told apart by content."""
    rng = np.random.default_rng(seed)
    frames = {}
    for split, ids in IDS.items():
        for uid in ids:
            n = int(rng.integers(rate // 10, rate // 5))
            frames[uid] = n
            for k, folder in enumerate(FOLDERS):
                path = root / rate_folder / version / split / folder
                path.mkdir(parents=True, exist_ok=True)
                sig = 0.1 * (k + 1) * np.sign(rng.standard_normal(n))
                sf.write(path / f"{uid}.wav", sig, rate)
    return frames


def write_metadata(root, split, rows):
    path = root / "metadata" / f"{split}.csv"
    path.parent.mkdir(exist_ok=True)
    lines = ["id,rt60,drr,room_x"]
    lines += [f"{uid},{rt60},{drr},5.0" for uid, rt60, drr in rows]
    path.write_text("\n".join(lines) + "\n")


def load(path):
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def stamp(path):
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns


@pytest.mark.parametrize(
    "task, input_folder",
    [("dereverb", "s1_reverb"), ("denoise_dereverb", "mix_single_reverb")],
)
def test_manifests_16k(tmp_path, task, input_folder):
    root = tmp_path / "whamr"
    frames = make_tree(root)
    save = tmp_path / "save"
    out = prepare_whamr(root, save, task=task)
    assert out == {
        s: str(save / f"{s}.json") for s in ("train", "valid", "test")
    }
    for split, folder in SPLITS.items():
        manifest = load(out[split])
        assert sorted(manifest) == sorted(IDS[folder])
        for uid, entry in manifest.items():
            base = root / "wav16k" / "min" / folder
            assert entry == {
                "noisy_wav": str(base / input_folder / f"{uid}.wav"),
                "clean_wav": str(base / "s1_anechoic" / f"{uid}.wav"),
                "length": frames[uid] / 16000,
                "spk_id": uid[:3],
            }
    assert not (save / "wav16k").exists()


def test_metadata_fields(tmp_path):
    root = tmp_path / "whamr"
    make_tree(root)
    write_metadata(
        root, "tr", [(u, 0.3 + i, 2.5 - i) for i, u in enumerate(IDS["tr"])]
    )
    write_metadata(root, "tt", [(u, 0.8, -1.0) for u in IDS["tt"]])
    out = prepare_whamr(root, tmp_path / "save")
    train = load(out["train"])
    first = train[IDS["tr"][1]]
    assert (first["rt60"], first["drr"]) == (1.3, 1.5)
    assert "room_x" not in first
    assert load(out["test"])[IDS["tt"][0]]["drr"] == -1.0
    assert "rt60" not in load(out["valid"])[IDS["cv"][0]]

    # A metadata CSV that lacks an utterance is an error naming it.
    write_metadata(root, "cv", [("someone_else", 0.5, 0.0)])
    with pytest.raises(ValueError) as err:
        prepare_whamr(root, tmp_path / "save")
    assert "cv.csv has no row for 1 utterance(s)" in str(err.value)
    assert IDS["cv"][0] in str(err.value)


def test_8k_needs_resample_flag(tmp_path):
    root = tmp_path / "whamr"
    make_tree(root, "wav8k", 8000)
    with pytest.raises(FileNotFoundError) as err:
        prepare_whamr(root, tmp_path / "save")
    assert "resample_8k=True" in str(err.value)
    assert str(root / "wav16k" / "min") in str(err.value)


def test_8k_resampled_into_cache(tmp_path, caplog):
    root = tmp_path / "whamr"
    frames = make_tree(root, "wav8k", 8000)
    save = tmp_path / "save"
    with caplog.at_level(logging.WARNING):
        out = prepare_whamr(
            root, save, task="denoise_dereverb", resample_8k=True
        )
    assert "upsampling" in caplog.text
    for split, folder in SPLITS.items():
        for uid, entry in load(out[split]).items():
            base = save / "wav16k" / "min" / folder
            assert entry["noisy_wav"] == str(
                base / "mix_single_reverb" / f"{uid}.wav"
            )
            assert entry["clean_wav"] == str(
                base / "s1_anechoic" / f"{uid}.wav"
            )
            assert entry["length"] == frames[uid] / 8000
            for key in ("noisy_wav", "clean_wav"):
                info = sf.info(entry[key])
                assert (info.samplerate, info.frames) == (
                    16000,
                    2 * frames[uid],
                )

    # Idempotent: nothing rewritten by a second call.
    files = [
        *out.values(),
        save / MARKER_NAME,
        *(save / "wav16k").rglob("*.wav"),
    ]
    before = {p: stamp(p) for p in files}
    prepare_whamr(root, save, task="denoise_dereverb", resample_8k=True)
    assert {p: stamp(p) for p in files} == before

    # Another task redoes the manifests, reusing the cached targets.
    out = prepare_whamr(root, save, task="dereverb", resample_8k=True)
    entry = load(out["train"])[IDS["tr"][0]]
    assert "/s1_reverb/" in entry["noisy_wav"]
    assert stamp(out["train"]) != before[out["train"]]
    target = save / "wav16k/min/tr/s1_anechoic" / f"{IDS['tr'][0]}.wav"
    assert stamp(target) == before[target]


def test_16k_preferred_over_8k(tmp_path):
    root = tmp_path / "whamr"
    make_tree(root)
    make_tree(root, "wav8k", 8000)
    out = prepare_whamr(root, tmp_path / "save", resample_8k=True)
    assert "/wav16k/min/tr/" in load(out["train"])[IDS["tr"][0]]["clean_wav"]


def test_max_version_and_missing_layout(tmp_path):
    root = tmp_path / "whamr"
    frames = make_tree(root, version="max")
    with pytest.raises(FileNotFoundError) as err:
        prepare_whamr(root, tmp_path / "save", version="min")
    assert "Neither" in str(err.value) and "Expected layout" in str(err.value)
    out = prepare_whamr(root, tmp_path / "save", version="max")
    entry = load(out["valid"])[IDS["cv"][0]]
    assert "/wav16k/max/cv/" in entry["clean_wav"]
    assert entry["length"] == frames[IDS["cv"][0]] / 16000

    for path in (root / "wav16k/max/tt/s1_reverb").iterdir():
        path.unlink()
    (root / "wav16k/max/tt/s1_reverb").rmdir()
    with pytest.raises(FileNotFoundError) as err:
        prepare_whamr(root, tmp_path / "save", version="max")
    assert str(root / "wav16k/max/tt/s1_reverb") in str(err.value)


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="Unknown WHAMR! task 'separate'"):
        prepare_whamr(tmp_path, tmp_path / "save", task="separate")
    with pytest.raises(ValueError, match="Unknown WHAMR! version 'mid'"):
        prepare_whamr(tmp_path, tmp_path / "save", version="mid")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_whamr(tmp_path / "absent", tmp_path / "save")


def test_unpaired_and_bad_rate(tmp_path):
    root = tmp_path / "whamr"
    make_tree(root)
    uid = IDS["tt"][1]
    (root / "wav16k/min/tt/s1_anechoic" / f"{uid}.wav").unlink()
    with pytest.raises(ValueError) as err:
        prepare_whamr(root, tmp_path / "save")
    assert f"s1_anechoic/{uid}.wav is missing (twin of" in str(err.value)

    bad = root / "wav16k/min/tt/s1_anechoic" / f"{uid}.wav"
    sf.write(bad, np.full(800, 0.1), 8000)
    with pytest.raises(ValueError) as err:
        prepare_whamr(root, tmp_path / "save")
    assert f"{bad} (8000 Hz)" in str(err.value)
    assert "sample rate other than 16000 Hz" in str(err.value)


def test_warns_on_unofficial_counts(tmp_path, caplog):
    root = tmp_path / "whamr"
    make_tree(root)
    with caplog.at_level(logging.WARNING):
        prepare_whamr(root, tmp_path / "save")
    assert (
        "WHAMR! train: found 2 pairs, the official set has 20000" in caplog.text
    )
    assert "valid: found 1 pairs, the official set has 5000" in caplog.text
