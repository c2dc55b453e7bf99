"""Tests of the VoiceBank-DEMAND preparation on fake corpora in tmp_path."""

import json
import logging
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechbrain_elbo.dataprep import prepare_voicebank
from speechbrain_elbo.dataprep.voicebank import MARKER_NAME, SUBSETS

TRAIN_SPEAKERS = ("p226", "p250", "p287")
TEST_SPEAKERS = ("p232",)


def _signal(rng, frames):
    return (0.3 * rng.standard_normal(frames)).clip(-0.9, 0.9)


def make_tree(root, rate=48000, per_speaker=2, seed=0):
    """Fake VoiceBank-DEMAND: returns {subset: {utt_id: frames}}."""
    rng = np.random.default_rng(seed)
    frames = {}
    for subset, (noisy, clean) in SUBSETS.items():
        (root / noisy).mkdir(parents=True, exist_ok=True)
        (root / clean).mkdir(parents=True, exist_ok=True)
        speakers = TRAIN_SPEAKERS if subset == "train" else TEST_SPEAKERS
        frames[subset] = {}
        for spk in speakers:
            for k in range(1, per_speaker + 1):
                uid = f"{spk}_{k:03d}"
                n = int(rng.integers(rate // 10, rate // 5))
                clean_sig = _signal(rng, n)
                noisy_sig = clean_sig + 0.05 * rng.standard_normal(n)
                sf.write(root / clean / f"{uid}.wav", clean_sig, rate)
                sf.write(root / noisy / f"{uid}.wav", noisy_sig, rate)
                frames[subset][uid] = n
    return frames


def load(path):
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def stamp(path):
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns


def cache_stamps(save):
    return {p: stamp(p) for p in sorted((save / "wav16k").rglob("*.wav"))}


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "vb"
    return root, make_tree(root)


def test_manifests_and_resampled_cache(corpus, tmp_path):
    root, frames = corpus
    save = tmp_path / "save"
    out = prepare_voicebank(root, save)
    assert out == {
        s: str(save / f"{s}.json") for s in ("train", "valid", "test")
    }
    train, valid, test = (load(out[s]) for s in ("train", "valid", "test"))
    assert sorted(valid) == ["p226_001", "p226_002", "p287_001", "p287_002"]
    assert sorted(train) == ["p250_001", "p250_002"]
    assert sorted(test) == ["p232_001", "p232_002"]
    for manifest, subset in (
        (train, "train"),
        (valid, "train"),
        (test, "test"),
    ):
        for uid, entry in manifest.items():
            assert set(entry) == {"noisy_wav", "clean_wav", "length", "spk_id"}
            assert entry["spk_id"] == uid.split("_")[0]
            n16 = math.ceil(frames[subset][uid] / 3)
            assert entry["length"] == pytest.approx(n16 / 16000, abs=1e-12)
            noisy_dir, clean_dir = SUBSETS[subset]
            for key, folder in (
                ("noisy_wav", noisy_dir),
                ("clean_wav", clean_dir),
            ):
                path = entry[key]
                assert os.path.isabs(path)
                assert path == str(save / "wav16k" / folder / f"{uid}.wav")
                info = sf.info(path)
                assert (info.samplerate, info.channels) == (16000, 1)
                assert info.frames == n16
    # The cached audio is the resampled source (up to 16-bit quantisation).
    uid = "p250_001"
    src, _ = sf.read(root / "clean_trainset_28spk_wav" / f"{uid}.wav")
    ref = torchaudio.functional.resample(
        torch.from_numpy(src).float(), 48000, 16000
    )
    got, _ = sf.read(train[uid]["clean_wav"], dtype="float32")
    np.testing.assert_allclose(got, ref.numpy(), atol=2 / 32768)


def test_16k_copies_are_used_in_place(tmp_path):
    root = tmp_path / "vb16"
    frames = make_tree(root, rate=16000)
    save = tmp_path / "save"
    test = load(prepare_voicebank(root, save)["test"])
    entry = test["p232_001"]
    assert entry["clean_wav"] == str(root / "clean_testset_wav/p232_001.wav")
    assert entry["length"] == frames["test"]["p232_001"] / 16000
    assert not (save / "wav16k").exists()


def test_idempotent_and_redone_on_new_options(corpus, tmp_path):
    root, _ = corpus
    save = tmp_path / "save"
    out = prepare_voicebank(root, save)
    outputs = [*out.values(), save / MARKER_NAME]
    before = {p: stamp(p) for p in outputs}
    cache = cache_stamps(save)
    assert len(cache) == 2 * (6 + 2)

    assert prepare_voicebank(root, save) == out
    assert {p: stamp(p) for p in outputs} == before
    assert cache_stamps(save) == cache

    # Other validation speakers: manifests rewritten, cache reused.
    prepare_voicebank(root, save, valid_speakers=["p250"])
    assert sorted(load(out["valid"])) == ["p250_001", "p250_002"]
    assert stamp(out["valid"]) != before[out["valid"]]
    assert cache_stamps(save) == cache


def test_redone_when_sources_change(corpus, tmp_path):
    root, _ = corpus
    save = tmp_path / "save"
    out = prepare_voicebank(root, save)
    for folder in SUBSETS["test"]:
        sf.write(root / folder / "p232_009.wav", np.full(4800, 0.1), 48000)
    assert "p232_009" in load(prepare_voicebank(root, save)["test"])
    assert len(load(out["test"])) == 3


def test_skip_prep_writes_nothing(tmp_path):
    out = prepare_voicebank(
        tmp_path / "nowhere", tmp_path / "save", skip_prep=True
    )
    assert out["train"] == str(tmp_path / "save" / "train.json")
    assert not (tmp_path / "save").exists()


def test_missing_folder(corpus, tmp_path):
    root, _ = corpus
    (root / "noisy_testset_wav" / "p232_001.wav").unlink()
    (root / "noisy_testset_wav" / "p232_002.wav").unlink()
    (root / "noisy_testset_wav").rmdir()
    with pytest.raises(FileNotFoundError) as err:
        prepare_voicebank(root, tmp_path / "save")
    assert str(root / "noisy_testset_wav") in str(err.value)
    assert "Expected layout" in str(err.value)
    assert "clean_trainset_28spk_wav" in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_voicebank(tmp_path / "absent", tmp_path / "save")


@pytest.mark.parametrize(
    "removed, missing",
    [
        ("noisy_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
        ("clean_trainset_28spk_wav", "clean_trainset_28spk_wav"),
    ],
)
def test_unpaired_files(corpus, tmp_path, removed, missing):
    root, _ = corpus
    (root / removed / "p250_002.wav").unlink()
    with pytest.raises(ValueError) as err:
        prepare_voicebank(root, tmp_path / "save")
    message = str(err.value)
    assert "1 file(s) have no twin" in message
    assert f"{root / missing / 'p250_002.wav'} is missing" in message


def _replace(root, name, data, rate, **kwargs):
    sf.write(root / "clean_trainset_28spk_wav" / name, data, rate, **kwargs)


@pytest.mark.parametrize(
    "data, rate, kwargs, expected",
    [
        (np.full(4410, 0.1), 44100, {}, "sample rate other than 48000 Hz or "),
        (np.full((4800, 2), 0.1), 48000, {}, "are not mono"),
        (np.zeros(0), 48000, {}, "are empty (0 samples)"),
        (np.zeros(4800), 48000, {}, "is silent"),
        (
            np.where(np.arange(4800) == 7, np.nan, 0.1),
            48000,
            {"subtype": "FLOAT"},
            "contains NaN",
        ),
    ],
    ids=["rate", "stereo", "empty", "silent", "nan"],
)
def test_bad_audio(corpus, tmp_path, data, rate, kwargs, expected):
    root, _ = corpus
    _replace(root, "p250_001.wav", data, rate, **kwargs)
    with pytest.raises(ValueError) as err:
        prepare_voicebank(root, tmp_path / "save")
    assert expected in str(err.value)
    assert str(root / "clean_trainset_28spk_wav" / "p250_001.wav") in str(
        err.value
    )
    assert not (tmp_path / "save" / MARKER_NAME).exists()


def test_all_bad_rates_are_listed(corpus, tmp_path):
    root, _ = corpus
    for name in ("p250_001.wav", "p250_002.wav"):
        _replace(root, name, np.full(2205, 0.1), 22050)
    with pytest.raises(ValueError, match="2 file") as err:
        prepare_voicebank(root, tmp_path / "save")
    assert "p250_001.wav (22050 Hz)" in str(err.value)
    assert "p250_002.wav (22050 Hz)" in str(err.value)


def test_length_mismatch(corpus, tmp_path):
    root, _ = corpus
    _replace(root, "p250_001.wav", np.full(4800, 0.1), 48000)
    sf.write(
        root / "noisy_trainset_28spk_wav" / "p250_001.wav",
        np.full(4803, 0.1),
        48000,
    )
    with pytest.raises(ValueError, match="length mismatch in pair p250_001"):
        prepare_voicebank(root, tmp_path / "save")


def test_valid_speakers_must_leave_both_sets(corpus, tmp_path, caplog):
    root, _ = corpus
    with pytest.raises(ValueError, match="Training speakers found"):
        prepare_voicebank(root, tmp_path / "s1", valid_speakers=("p999",))
    with pytest.raises(ValueError, match="leave the training or the valid"):
        prepare_voicebank(root, tmp_path / "s2", valid_speakers=TRAIN_SPEAKERS)
    with caplog.at_level(logging.WARNING):
        out = prepare_voicebank(
            root, tmp_path / "s3", valid_speakers=("p226", "p999")
        )
    assert "['p999'] are not in the training set" in caplog.text
    assert sorted(load(out["valid"])) == ["p226_001", "p226_002"]
    out = prepare_voicebank(root, tmp_path / "s4", valid_speakers="p250")
    assert sorted(load(out["valid"])) == ["p250_001", "p250_002"]


def test_warns_on_unofficial_counts(corpus, tmp_path, caplog):
    root, _ = corpus
    with caplog.at_level(logging.WARNING):
        prepare_voicebank(root, tmp_path / "save")
    assert "train: found 6 pairs, the official set has 11572" in caplog.text
    assert "test: found 2 pairs, the official set has 824" in caplog.text
