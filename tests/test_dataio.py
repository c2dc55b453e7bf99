"""Tests of the dataset pipelines (crops, padding, checks, batching)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import make_dataloader

from speechbrain_elbo.dataio import crop_length, make_datasets

CROP = 32640
SCALE = 2.0**-16  # ramp step: exactly representable in float32 WAV


def ramp(n, offset=0.0):
    """Sample i has value offset + i * SCALE, so a crop tells its start."""
    return offset + SCALE * np.arange(n)


def write_manifest(tmp_path, lengths, name="m.json", rate=16000, twin=None):
    """Files u<k> of the given lengths with clean == noisy (float WAV)."""
    data = {}
    for k, n in enumerate(lengths):
        uid = f"u{k}"
        noisy, clean = tmp_path / f"{uid}_n.wav", tmp_path / f"{uid}_c.wav"
        sf.write(noisy, ramp(n, 0.01), rate, subtype="FLOAT")
        sf.write(
            clean,
            ramp(n, 0.01) if twin is None else twin,
            rate,
            subtype="FLOAT",
        )
        data[uid] = {
            "noisy_wav": str(noisy),
            "clean_wav": str(clean),
            "length": n / rate,
        }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def start_of(sig):
    return round((sig[0].item() - 0.01) / SCALE)


def test_crop_length():
    assert crop_length() == 32640 == (256 - 1) * 128
    assert crop_length(64, 256) == 63 * 256
    with pytest.raises(ValueError, match="crop_frames must be >= 2"):
        crop_length(1, 128)


def test_random_crop_same_for_noisy_and_clean(tmp_path):
    n = CROP + 50
    manifest = write_manifest(tmp_path, [n])
    train = make_datasets({"train": manifest})["train"]
    torch.manual_seed(0)
    starts = []
    for _ in range(300):
        item = train[0]
        assert item["id"] == "u0"
        noisy, clean = item["noisy_sig"], item["clean_sig"]
        assert noisy.dtype == clean.dtype == torch.float32
        assert noisy.shape == clean.shape == (CROP,)
        assert torch.equal(noisy, clean)
        start = start_of(noisy)
        expected = torch.tensor(
            ramp(CROP, 0.01 + start * SCALE), dtype=torch.float32
        )
        assert torch.equal(noisy, expected)
        starts.append(start)
    assert min(starts) == 0 and max(starts) == 50
    assert len(set(starts)) > 40


def test_random_crop_reproducible_with_seed(tmp_path):
    manifest = write_manifest(tmp_path, [CROP + 5000])
    train = make_datasets({"train": manifest})["train"]

    def draw():
        return [start_of(train[0]["noisy_sig"]) for _ in range(5)]

    torch.manual_seed(1234)
    first = draw()
    torch.manual_seed(1234)
    assert draw() == first
    assert len(set(first)) > 1


def test_center_crop_and_padding(tmp_path):
    manifest = write_manifest(tmp_path, [CROP + 101, 20000])
    sets = make_datasets({"train": manifest, "valid": manifest})
    valid = sets["valid"]
    assert start_of(valid[0]["noisy_sig"]) == 50
    assert start_of(valid[0]["clean_sig"]) == 50
    for split in ("train", "valid"):
        short = sets[split][1]
        for key in ("noisy_sig", "clean_sig"):
            sig = short[key]
            assert sig.shape == (CROP,)
            expected = torch.tensor(ramp(20000, 0.01), dtype=torch.float32)
            assert torch.equal(sig[:20000], expected)
            assert torch.count_nonzero(sig[20000:]) == 0


def test_test_split_whole_file_and_padded_batch(tmp_path):
    manifest = write_manifest(tmp_path, [16000, 8000])
    test = make_datasets({"test": manifest})["test"]
    assert test[0]["noisy_sig"].shape == (16000,)
    assert test[1]["clean_sig"].shape == (8000,)
    loader = make_dataloader(test, batch_size=2)
    batch = next(iter(loader))
    assert isinstance(batch, PaddedBatch)
    assert batch.id == ["u0", "u1"]
    for key in ("noisy_sig", "clean_sig"):
        sig, lens = getattr(batch, key)
        assert sig.shape == (2, 16000)
        assert torch.allclose(lens, torch.tensor([1.0, 0.5]))
        assert torch.count_nonzero(sig[1, 8000:]) == 0


def test_custom_crop_modes_and_frames(tmp_path):
    manifest = write_manifest(tmp_path, [5000])
    sets = make_datasets(
        {"a": manifest, "b": manifest},
        crop_frames=9,
        hop_length=256,
        crop={"a": "center", "b": None},
    )
    assert start_of(sets["a"][0]["noisy_sig"]) == (5000 - 2048) // 2
    assert sets["b"][0]["noisy_sig"].shape == (5000,)
    with pytest.raises(
        ValueError, match=r"No crop mode for split\(s\) \['b'\]"
    ):
        make_datasets({"b": manifest}, crop={"a": "center"})
    with pytest.raises(ValueError, match="Unknown crop mode 'middle'"):
        make_datasets({"a": manifest}, crop={"a": "middle"})


def test_replacements(tmp_path):
    sf.write(tmp_path / "x.wav", np.full(100, 0.5), 16000)
    entry = {
        "noisy_wav": "{root}/x.wav",
        "clean_wav": "{root}/x.wav",
        "length": 0.1,
    }
    (tmp_path / "m.json").write_text(json.dumps({"x": entry}))
    sets = make_datasets(
        {"test": tmp_path / "m.json"}, replacements={"root": str(tmp_path)}
    )
    assert sets["test"][0]["noisy_sig"].shape == (100,)


def test_wrong_rate_is_an_error(tmp_path):
    manifest = write_manifest(tmp_path, [4000], rate=8000)
    test = make_datasets({"test": manifest})["test"]
    with pytest.raises(
        ValueError, match="sample rate of 8000 Hz, expected 16000 Hz"
    ):
        test[0]


def test_stereo_is_an_error(tmp_path):
    manifest = write_manifest(tmp_path, [4000], twin=np.full((4000, 2), 0.1))
    test = make_datasets({"test": manifest})["test"]
    with pytest.raises(ValueError, match="u0_c.wav has 2 channels"):
        test[0]


def test_length_mismatch_is_an_error(tmp_path):
    manifest = write_manifest(tmp_path, [4000], twin=np.full(3999, 0.1))
    train = make_datasets({"train": manifest})["train"]
    with pytest.raises(ValueError, match="differ in length.*4000.*3999"):
        train[0]
