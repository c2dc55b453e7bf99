"""Tests of ``tools/unseen_check.py``: mixing, metadata, table, errors.

Everything runs on synthetic sources and the tiny random models of
``conftest.py``: no network, no apt, no Debian package.
"""

import csv
import math

import numpy as np
import pytest
import soundfile as sf

from speechbrain_elbo.minidata.signals import active_speech_level, mix_at_snr

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 16000


@pytest.fixture(scope="module")
def tool(script):
    return script("tools/unseen_check.py")


def _speechlike(seconds, rng):
    """A voiced-like signal with syllable bursts and pauses."""
    t = np.arange(round(seconds * RATE)) / RATE
    carrier = sum(
        np.sin(2 * np.pi * f * t) / k
        for k, f in enumerate((140.0, 280.0, 560.0, 1100.0), 1)
    )
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 4) * t), 0, None)
    return (0.3 * carrier * envelope).astype(np.float32)


def _sources(prompts_per_voice=24, seed=0, lengths=(0.6, 1.6)):
    rng = np.random.default_rng(seed)
    voices = {
        voice: [
            (f"{voice}/p{i}.g722", _speechlike(rng.uniform(*lengths), rng))
            for i in range(prompts_per_voice)
        ]
        for voice in ("es_allison", "fr_june")
    }
    noises = {
        "traffic": [
            ("lincity-ng-data", "sounds/TraficHigh1.wav", "GPL-2+", w)
            for w in (rng.standard_normal(3 * RATE).astype(np.float32),)
        ],
        "alerts": [
            ("sound-theme-freedesktop", "stereo/bell.oga", "CC-BY-3.0", w)
            for w in (_speechlike(0.5, rng),)  # shorter than items: looped
        ],
        "hum": [],
    }
    return voices, noises


@pytest.mark.parametrize("snr", [0.0, 4.2, 15.0])
def test_mix_reaches_the_snr_and_the_level(tool, snr):
    rng = np.random.default_rng(1)
    speech = _speechlike(3.0, rng)
    for noise in (
        rng.standard_normal(speech.size),
        tool.mains_hum(speech.size, rng),
    ):
        clean, noisy, gain = mix_at_snr(speech, noise, snr, -25.0)
        assert gain == 1.0
        assert tool.measured_snr(clean, noisy) == pytest.approx(snr, abs=1e-6)
        level = 10 * math.log10(active_speech_level(clean)[0])
        assert level == pytest.approx(-25.0, abs=1e-6)


def test_mix_scales_down_a_clipping_pair_without_changing_the_snr(tool):
    rng = np.random.default_rng(2)
    speech = _speechlike(2.0, rng)
    clean, noisy, gain = mix_at_snr(
        speech, rng.standard_normal(speech.size), 0.0, -3.0
    )
    assert gain < 1.0
    assert np.max(np.abs(noisy)) <= 0.99 + 1e-12
    assert tool.measured_snr(clean, noisy) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="silent"):
        mix_at_snr(np.zeros(100), np.ones(100), 5.0, -25.0)


def test_mains_hum_is_mains_and_harmonics(tool):
    x = tool.mains_hum(4 * RATE, np.random.default_rng(3))
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / RATE)
    peak = freqs[np.argmax(spectrum)]
    assert 49 <= peak <= 61
    assert spectrum[freqs > 2100].sum() < 1e-4 * spectrum.sum()


def test_utterances_use_each_prompt_once_within_the_lengths(tool):
    voices, _ = _sources(prompts_per_voice=30)
    prompts = voices["fr_june"]
    made = tool.utterances(prompts, 6, np.random.default_rng(4))
    used = [name for names, _ in made for name in names]
    assert len(used) == len(set(used))
    for _, wav in made:
        assert 2.0 * RATE <= wav.size <= 5.0 * RATE
    with pytest.raises(ValueError, match="utterances"):
        tool.utterances(prompts[:3], 6, np.random.default_rng(4))


def test_items_and_metadata(tool, tmp_path):
    voices, noises = _sources()
    items = tool.make_items(voices, noises, seed=5, per_cell=2)
    again = tool.make_items(voices, noises, seed=5, per_cell=2)
    assert [r for r, _, _ in items] == [r for r, _, _ in again]
    assert len(items) == 2 * 3 * 2
    cells = {(r["voice"], r["noise_type"]) for r, _, _ in items}
    assert len(cells) == 6
    tool.write_pairs(tmp_path, items)
    rows = list(csv.DictReader(open(tmp_path / "metadata.csv")))
    assert [r["id"] for r in rows] == [r["id"] for r, _, _ in items]
    for field in (
        "speech_package",
        "speech_files",
        "speech_licence",
        "noise_package",
        "noise_file",
        "noise_licence",
        "snr_db",
    ):
        assert all(r[field] for r in rows), field
    assert {r["noise_package"] for r in rows if r["noise_type"] == "hum"} == {
        "synthetic"
    }
    for row in rows:
        assert 0.0 <= float(row["snr_db"]) <= 15.0
        clean, rate = sf.read(tmp_path / "clean" / f"{row['id']}.wav")
        noisy, _ = sf.read(tmp_path / "noisy" / f"{row['id']}.wav")
        assert rate == RATE and clean.size == noisy.size
        assert clean.size / RATE == pytest.approx(
            float(row["duration_s"]), abs=1e-4
        )
        snr = tool.measured_snr(clean, noisy)
        assert snr == pytest.approx(float(row["snr_db"]), abs=1e-3)


def _fake_build(tool, folder):
    """Six items of about a second: enhancing them takes seconds."""
    voices, noises = _sources(prompts_per_voice=16, lengths=(0.3, 0.5))
    items = tool.make_items(voices, noises, per_cell=1, seconds=(0.6, 1.0))
    tool.write_pairs(folder, items)
    return folder


def test_table_of_a_tiny_model(tool, tiny_models, tmp_path, monkeypatch):
    pairs = _fake_build(tool, tmp_path / "work" / "pairs")
    monkeypatch.setattr(tool, "build_pairs", lambda *a, **k: pairs)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_models[1]), "--work", str(tmp_path / "work")]
    status = tool.main(argv + ["--out", str(out), "--steps", "1"])
    assert status == 0
    text = (out / "unseen_check.md").read_text()
    table = list(csv.DictReader(open(out / "unseen_check.csv")))
    groups = [row["group"] for row in table]
    assert groups == [
        "all",
        "voice:es_allison",
        "voice:fr_june",
        "noise:traffic",
        "noise:alerts",
        "noise:hum",
    ]
    assert [int(row["items"]) for row in table] == [6, 3, 3, 2, 2, 2]
    per_item = list(csv.DictReader(open(out / "per_item.csv")))
    assert len(per_item) == 6
    noisy_sdr = np.mean([float(r["noisy_si_sdr"]) for r in per_item])
    assert float(table[0]["noisy_si_sdr"]) == pytest.approx(noisy_sdr, 1e-3)
    # per_item.csv is rounded to 4 decimals: ties there may be wins
    pairs = [
        (float(r["stage1+2_pesq"]), float(r["noisy_pesq"])) for r in per_item
    ]
    wins = float(table[0]["final_beats_noisy_pesq"])
    low = np.mean([a > b for a, b in pairs]) - 1e-4
    assert low <= wins <= np.mean([a >= b for a, b in pairs]) + 1e-4
    assert "stage1+2_si_sdr" in table[0] and table[0]["final"] == "stage1+2"
    assert "| all | 6 |" in text and "refiner.ckpt" in text
    assert "--steps 1" in text and "python tools/unseen_check.py" in text
    for path in out.iterdir():
        assert str(tmp_path) not in path.read_text(), path.name


def test_stage1_only_model_has_no_stage2_columns(tool, tiny_models, tmp_path):
    items = tool.read_pairs(_fake_build(tool, tmp_path / "pairs"))[:2]
    enhancer = tool.load_model(tiny_models[0])
    rows = tool.enhance_items(enhancer, items, steps=1)
    table = tool.summarise(rows)
    assert table[0]["final"] == "stage1"
    assert "stage1+2_pesq" not in table[0]
    assert 0.0 <= table[0]["final_beats_noisy_si_sdr"] <= 1.0


def test_bad_model_is_one_clear_error_line(tool, tmp_path, capsys):
    status = tool.main(
        ["--model", str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("unseen_check: error: --model")
    assert "hyperparams.yaml" in err[0]
    assert not (tmp_path / "unseen_check.md").exists()


def test_dereverb_rooms_lie_outside_miniwhamr_and_are_tabulated(
    tool, tiny_models, tmp_path, monkeypatch
):
    # --task dereverb: each voice in each unseen room type, the measured
    # RT60 inside the type's range, the target the anechoic part
    from speechbrain_elbo.minidata.acoustics import RoomConfig

    voices, _ = _sources(prompts_per_voice=12, lengths=(0.3, 0.5))
    voices = {"es_allison": voices["es_allison"]}
    items = tool.make_room_items(voices, seed=1, per_cell=1, seconds=(0.6, 1.0))
    assert [r["room"] for r, _, _ in items] == list(tool.ROOM_TYPES)
    miniwhamr = RoomConfig()
    for row, anechoic, reverb in items:
        config = RoomConfig(**tool.ROOM_TYPES[row["room"]][1])
        assert config.rt60_range[0] <= row["rt60"] <= config.rt60_range[1]
        outside = (
            row["rt60"] > miniwhamr.rt60_range[1]
            or row["rt60"] < miniwhamr.rt60_range[0]
            or row["distance_m"] > miniwhamr.distance_range[1]
        )
        assert outside, row
        assert anechoic.shape == reverb.shape
        assert np.max(np.abs(reverb)) < 1.0
        # the recorded level is the reverberant speech's active level
        level = 10 * np.log10(active_speech_level(reverb)[0])
        assert level == pytest.approx(row["level_dbfs"], abs=0.01)
        assert -30.5 <= row["level_dbfs"] <= -20.0
        # reverberation adds energy after the direct path: the reverberant
        # speech departs from the target, more in the hall than the booth
        row["sdr"] = 10 * np.log10(
            np.sum(anechoic**2) / np.sum((reverb - anechoic) ** 2)
        )
    by_room = {row["room"]: row for row, _, _ in items}
    assert by_room["booth"]["sdr"] > by_room["hall"]["sdr"]
    assert by_room["booth"]["drr"] > by_room["hall"]["drr"]
    pairs = tmp_path / "work" / "rooms"
    tool.write_pairs(pairs, items)
    monkeypatch.setattr(tool, "build_pairs", lambda *a, **k: pairs)
    out = tmp_path / "out"
    argv = ["--task", "dereverb", "--model", str(tiny_models[1])]
    assert tool.main(argv + ["--out", str(out), "--steps", "1"]) == 0
    table = list(csv.DictReader(open(out / "unseen_check.csv")))
    assert [row["group"] for row in table] == [
        "all",
        "voice:es_allison",
        "room:booth",
        "room:hall",
        "room:far",
    ]
    text = (out / "unseen_check.md").read_text()
    assert text.startswith("# Voices and rooms the model never saw")
    assert "PESQ reverb" in text and "large hall" in text
    per_item = list(csv.DictReader(open(out / "per_item.csv")))
    assert {r["room"] for r in per_item} == set(tool.ROOM_TYPES)
    assert all(float(r["rt60"]) > 0 for r in per_item)
