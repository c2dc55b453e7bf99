"""Tests of the offline sources and the MiniVB / MiniWHAMR builders.

Everything runs on the fixtures bundled in speechbrain_elbo/minidata/samples
(the fallback path), so no test calls apt-get or needs the network.
"""

import csv
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from speechbrain_elbo.minidata import bank as sources
from speechbrain_elbo.minidata import builders as minidata
from speechbrain_elbo.minidata import packages
from speechbrain_elbo.minidata.acoustics import RoomConfig
from speechbrain_elbo.minidata.builders import (
    VB_FOLDERS,
    VB_SPEAKERS,
    build_minivb,
    build_miniwhamr,
)
from speechbrain_elbo.minidata.clips import DEFAULT_SAMPLES, load_fixtures
from speechbrain_elbo.minidata.packages import SourcesUnavailable
from speechbrain_elbo.minidata.rooms import WHAMR_FOLDERS
from speechbrain_elbo.minidata.signals import (
    SYNTHETIC_COLOURS,
    active_speech_level,
    power,
    split_at_pauses,
    synthetic_noise,
)

TINY = {"train_minutes": 0.05, "valid_items": 2, "test_items": 2}
ROOMS = RoomConfig(rt60_range=(0.2, 0.5))


def bank():
    """The fixtures cut into 1 s clips (4 per recording)."""
    return load_fixtures(DEFAULT_SAMPLES, segment_seconds=1.0)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin))


def tree_bytes(root):
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def minivb(tmp_path_factory):
    out = tmp_path_factory.mktemp("vb") / "minivb"
    build_minivb(out, bank(), seed=7, progress=False, **TINY)
    return out


@pytest.fixture(scope="module")
def miniwhamr(tmp_path_factory):
    out = tmp_path_factory.mktemp("whamr") / "miniwhamr"
    build_miniwhamr(
        out, bank(), seed=7, room_config=ROOMS, progress=False, **TINY
    )
    return out


# ---------------------------------------------------------------- fixtures


def test_fixtures_are_small_licensed_16k_mono():
    files = sorted(DEFAULT_SAMPLES.glob("*.wav"))
    assert len(files) == 5
    assert sum(p.stat().st_size for p in files) < 1024 * 1024
    for path in files:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (
            16000,
            1,
            "PCM_16",
        )
    text = (DEFAULT_SAMPLES / "LICENSE.md").read_text()
    assert "MODIFIED" in text
    rows = read_rows(DEFAULT_SAMPLES / "samples.csv")
    assert {r["path"] for r in rows} == {p.name for p in files}
    for row in rows:
        assert row["package"] in text and row["licence"]
    speech = load_fixtures().speech
    assert len({c.package for c in speech}) == 3


# ---------------------------------------------------------------- signals


def test_active_level_is_exactly_proportional_to_power():
    speech = load_fixtures().speech[0].read().astype(np.float64)
    level, activity = active_speech_level(speech)
    for gain in (0.01, 0.3, 1.7):
        scaled, act = active_speech_level(speech * gain)
        assert scaled == pytest.approx(level * gain**2, rel=1e-9)
        assert act == pytest.approx(activity, rel=1e-9)
    # Speech with a pause: the active level exceeds the mean power.
    padded = np.concatenate([speech, np.zeros(3 * speech.size)])
    assert active_speech_level(padded)[0] == pytest.approx(level, rel=0.05)
    assert power(padded) < 0.3 * level


@pytest.mark.parametrize("colour,slope", [("pink", -10), ("brown", -20)])
def test_synthetic_noise_spectral_slope(colour, slope):
    noise = synthetic_noise(colour, 160000, np.random.default_rng(0))
    freqs, psd = welch(noise, fs=16000, nperseg=4096)
    band = (freqs >= 100) & (freqs <= 4000)
    fit = np.polyfit(np.log10(freqs[band]), 10 * np.log10(psd[band]), 1)[0]
    assert fit == pytest.approx(slope, abs=1.0)  # dB per decade
    white = synthetic_noise("white", 160000, np.random.default_rng(0))
    _, psd = welch(white, fs=16000, nperseg=4096)
    flat = np.polyfit(np.log10(freqs[band]), 10 * np.log10(psd[band]), 1)[0]
    assert flat == pytest.approx(0.0, abs=1.0)


def test_split_at_pauses_covers_input_and_respects_length():
    speech = np.concatenate([c.read() for c in load_fixtures().speech])
    parts = split_at_pauses(speech, 32000)
    assert all(p.size <= 32000 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), speech)
    with pytest.raises(ValueError, match="too short"):
        split_at_pauses(speech, 100)


# ---------------------------------------------------------------- sources


def test_fallback_to_fixtures_is_loud(tmp_path, caplog, capsys):
    with caplog.at_level(logging.WARNING):
        got = sources.load_sources(
            tmp_path, apt_get="no-such-apt-get-xyz", segment_seconds=None
        )
    assert got.fallback and len(got.speech) == 3 and len(got.noise) == 2
    assert "Falling back" in caplog.text
    assert "!" * 78 in capsys.readouterr().err


def test_fetch_package_reports_failure(tmp_path):
    with pytest.raises(SourcesUnavailable, match="false download"):
        packages.fetch_package("festvox-ru", tmp_path, apt_get="false")
    assert not (tmp_path / "packages" / "festvox-ru").exists()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_decode_g722_round_trip(tmp_path):
    t = np.arange(16000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(tmp_path / "in.wav", tone, 16000)
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i"]
    cmd += [str(tmp_path / "in.wav"), "-f", "g722", str(tmp_path / "a.g722")]
    subprocess.run(cmd, check=True)
    out = tmp_path / "out.wav"
    packages.decode_g722([tmp_path / "a.g722"], [out])
    decoded, rate = sf.read(out)
    assert rate == 16000 and abs(decoded.size - tone.size) <= 64
    # G.722 delays the signal by a few samples: align, then compare.
    lag = max(
        range(64), key=lambda k: np.dot(decoded[k : k + 8000], tone[:8000])
    )
    corr = np.corrcoef(decoded[lag : lag + 8000], tone[:8000])[0, 1]
    assert corr > 0.99


def test_segments_keep_the_recording_group():
    clips = bank().speech
    assert len(clips) == 10  # 4.4 s, 3.2 s and 3.3 s recordings
    groups = {c.group for c in clips}
    assert groups == {"speech_ru", "speech_en", "speech_librivox"}
    ru = [c for c in clips if c.group == "speech_ru"]
    assert [(c.start, c.stop) for c in ru] == [
        (0, 16000),
        (16000, 32000),
        (32000, 48000),
        (48000, sf.info(str(ru[0].path)).frames),
    ]


# ---------------------------------------------------------------- MiniVB


def test_minivb_layout_and_names(minivb):
    for clean, noisy in VB_FOLDERS.values():
        names_c = sorted(p.name for p in (minivb / clean).iterdir())
        names_n = sorted(p.name for p in (minivb / noisy).iterdir())
        assert names_c == names_n and names_c
        assert all(re.fullmatch(r"p\d{3}_\d{3}\.wav", n) for n in names_c)
    rows = {s: read_rows(minivb / "metadata" / f"{s}.csv") for s in VB_SPEAKERS}
    assert [len(rows[s]) for s in ("train", "valid", "test")] == [3, 2, 2]
    for split, split_rows in rows.items():
        assert {r["spk_id"] for r in split_rows} <= set(VB_SPEAKERS[split])
        for row in split_rows:
            assert row["licence"] and row["noise_licence"]
    train_files = {p.stem for p in (minivb / VB_FOLDERS["train"][0]).iterdir()}
    assert train_files == {r["id"] for r in rows["train"] + rows["valid"]}
    info = sf.info(str(next((minivb / "clean_testset_wav").iterdir())))
    assert (info.samplerate, info.subtype) == (16000, "PCM_16")
    assert "MODIFIED" in (minivb / "SOURCES.md").read_text()


def test_minivb_snr_measured_from_files(minivb):
    for split in ("train", "valid", "test"):
        clean_dir, noisy_dir = VB_FOLDERS[
            "test" if split == "test" else "train"
        ]
        for row in read_rows(minivb / "metadata" / f"{split}.csv"):
            clean, _ = sf.read(minivb / clean_dir / f"{row['id']}.wav")
            noisy, _ = sf.read(minivb / noisy_dir / f"{row['id']}.wav")
            snr = 10 * np.log10(
                active_speech_level(clean)[0] / power(noisy - clean)
            )
            assert snr == pytest.approx(float(row["snr_db"]), abs=0.01)
            snrs = (
                minidata.VB_TEST_SNRS
                if split == "test"
                else (minidata.VB_TRAIN_SNRS)
            )
            assert float(row["snr_db"]) in snrs
            assert np.max(np.abs(noisy)) <= 0.99 + 1e-4


def test_minivb_splits_are_disjoint(minivb):
    rows = {
        s: read_rows(minivb / "metadata" / f"{s}.csv")
        for s in ("train", "valid", "test")
    }
    sources_of = {s: {r["source"] for r in rows[s]} for s in rows}
    noise_of = {
        s: {r["noise_source"] for r in rows[s]}
        - {f"synthetic:{c}" for c in SYNTHETIC_COLOURS}
        for s in rows
    }
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not sources_of[a] & sources_of[b]
        assert not noise_of[a] & noise_of[b]
    # The pocketsphinx (LibriVox) talker is held out for the test set.
    assert {r["speaker"] for r in rows["test"]} == {"librivox_austen"}


def test_minivb_deterministic_and_seed_dependent(minivb, tmp_path):
    again = build_minivb(tmp_path / "a", bank(), seed=7, progress=False, **TINY)
    assert tree_bytes(again) == tree_bytes(minivb)
    other = build_minivb(tmp_path / "b", bank(), seed=8, progress=False, **TINY)
    assert tree_bytes(other) != tree_bytes(minivb)


def test_minivb_cached_and_protected(tmp_path, monkeypatch):
    out = tmp_path / "vb"
    build_minivb(out, bank(), seed=1, progress=False, **TINY)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def fail(*args, **kwargs):
        raise AssertionError("a cached build must not write audio")

    monkeypatch.setattr(minidata, "write_audio_atomic", fail)
    build_minivb(out, bank(), seed=1, progress=False, **TINY)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    with pytest.raises(FileExistsError, match="other options"):
        build_minivb(out, bank(), seed=2, progress=False, **TINY)
    # A build that fails half way leaves neither output nor temporary folder.
    with pytest.raises(AssertionError):
        build_minivb(
            out, bank(), seed=2, overwrite=True, progress=False, **TINY
        )
    assert json.loads((out / "minidata.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vb"]


def test_minivb_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="train_minutes must be positive"):
        build_minivb(tmp_path / "x", bank(), train_minutes=0)


def test_minivb_is_read_by_prepare_voicebank(minivb, tmp_path):
    from speechbrain_elbo.dataprep import prepare_voicebank

    prepare_voicebank(minivb, tmp_path)
    counts = {
        name: len(json.loads((tmp_path / f"{name}.json").read_text()))
        for name in ("train", "valid", "test")
    }
    assert counts == {"train": 3, "valid": 2, "test": 2}


# ---------------------------------------------------------------- MiniWHAMR


def test_miniwhamr_layout_metadata_and_disjointness(miniwhamr):
    rows = {}
    for split in ("tr", "cv", "tt"):
        base = miniwhamr / "wav16k" / "min" / split
        listings = [
            sorted(p.name for p in (base / sub).iterdir())
            for sub in WHAMR_FOLDERS
        ]
        assert all(names == listings[0] for names in listings)
        rows[split] = read_rows(miniwhamr / "metadata" / f"{split}.csv")
        assert sorted(f"{r['id']}.wav" for r in rows[split]) == listings[0]
        for row in rows[split]:
            assert 0.2 <= float(row["rt60"]) <= 0.5
            assert 0.0 <= float(row["snr_db"]) <= 15.0
            for key in ("drr", "room_x", "room_y", "room_z", "licence"):
                assert row[key] != ""
    groups = {s: {r["source"] for r in rows[s]} for s in rows}
    assert not groups["tr"] & groups["tt"] and not groups["cv"] & groups["tt"]
    assert not groups["tr"] & groups["cv"]


def test_miniwhamr_deterministic(miniwhamr, tmp_path):
    again = build_miniwhamr(
        tmp_path / "w", bank(), seed=7, room_config=ROOMS, progress=False,
        **TINY,
    )  # fmt: skip
    assert tree_bytes(again) == tree_bytes(miniwhamr)


def test_miniwhamr_is_read_by_prepare_whamr(miniwhamr, tmp_path):
    from speechbrain_elbo.dataprep import prepare_whamr

    prepare_whamr(miniwhamr, tmp_path, task="denoise_dereverb")
    test = json.loads((tmp_path / "test.json").read_text())
    assert len(test) == 2
    entry = next(iter(test.values()))
    assert entry["spk_id"] == "librivox_austen" and 0.2 <= entry["rt60"]


# ---------------------------------------------------------------- CLI


def test_cli_help_and_tiny_build(tmp_path, capsys):
    with pytest.raises(SystemExit):
        minidata.main(["--help"])
    assert "--train-minutes" in capsys.readouterr().out
    built = minidata.main(
        [
            "vb",
            "--out",
            str(tmp_path / "cli"),
            "--samples-dir",
            str(DEFAULT_SAMPLES),
            "--segment-seconds",
            "1.0",
            "--train-minutes",
            "0.02",
            "--valid-items",
            "1",
            "--test-items",
            "1",
            "--no-progress",
        ]
    )
    assert built == [tmp_path / "cli"]
    assert len(list((tmp_path / "cli" / "clean_testset_wav").iterdir())) == 1
