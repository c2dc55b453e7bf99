"""Tests of the room simulation (minidata.acoustics and minidata.rooms)."""

import csv
import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import fftconvolve

from speechbrain_elbo.minidata import rooms
from speechbrain_elbo.minidata.acoustics import (
    RoomConfig,
    measure_rt60,
    reverberate,
    simulate_room,
)
from speechbrain_elbo.minidata.clips import DEFAULT_SAMPLES, load_fixtures
from speechbrain_elbo.minidata.rooms import WHAMR_FOLDERS, simulate_folder
from speechbrain_elbo.minidata.signals import active_speech_level, power

#: Close talker, little reverberation: the direct path dominates.
CLOSE = RoomConfig(rt60_range=(0.2, 0.35), distance_range=(0.7, 1.0))


@pytest.mark.parametrize("rt60", [0.3, 0.8])
def test_measure_rt60_on_exponential_decay(rt60):
    rng = np.random.default_rng(1)
    t = np.arange(int(1.5 * rt60 * 16000)) / 16000
    rir = rng.standard_normal(t.size) * 10 ** (-3 * t / rt60)
    assert measure_rt60(rir) == pytest.approx(rt60, rel=0.05)
    assert measure_rt60(rir, decay_db=20) == pytest.approx(rt60, rel=0.05)


def test_measure_rt60_rejects_short_decay():
    with pytest.raises(ValueError, match="falls by only"):
        measure_rt60(np.exp(-np.arange(100) / 1000.0))


def test_measured_rt60_lands_in_range():
    config = RoomConfig(rt60_range=(0.2, 1.0))
    rng = np.random.default_rng(3)
    measured = []
    for _ in range(6):
        room = simulate_room(config, rng)
        assert 0.2 <= room.rt60 <= 1.0
        assert room.rt60 == pytest.approx(measure_rt60(room.rir))
        assert room.max_order <= config.max_order
        measured.append(room.rt60)
    assert max(measured) - min(measured) > 0.2  # the range is explored


def test_target_is_the_direct_path_plus_2p5_ms():
    config = RoomConfig(rt60_range=(0.3, 0.6))
    room = simulate_room(config, np.random.default_rng(5))
    d = room.direct_index
    keep = d + 40 + 1  # 2.5 ms at 16 kHz, inclusive
    np.testing.assert_allclose(room.target[:keep], room.rir[:keep], atol=1e-15)
    assert np.all(room.target[keep + 16 :] == 0)  # after the 1 ms fade
    # The direct path arrives at distance / c (plus the filter's delay).
    distance = np.linalg.norm(np.subtract(room.source, room.mic))
    delay = distance / 343.0 * 16000
    assert d - delay == pytest.approx(40, abs=1.0)
    rest = np.sum((room.rir - room.target) ** 2)
    drr = 10 * np.log10(np.sum(room.target**2) / rest)
    assert room.drr == pytest.approx(drr)


def test_reverberant_and_target_are_aligned():
    speech = load_fixtures().speech[0].read().astype(np.float64)
    room = simulate_room(CLOSE, np.random.default_rng(2))
    assert room.drr > 0
    reverb, anechoic = reverberate(speech, room)
    assert reverb.shape == anechoic.shape == speech.shape
    xcorr = fftconvolve(reverb, anechoic[::-1])
    lags = np.arange(-anechoic.size + 1, reverb.size)
    window = np.abs(lags) <= 200
    assert lags[window][np.argmax(xcorr[window])] == 0
    np.testing.assert_allclose(
        anechoic, fftconvolve(speech, room.target)[: speech.size]
    )


def test_simulation_is_deterministic():
    a = simulate_room(RoomConfig(), np.random.default_rng(9))
    b = simulate_room(RoomConfig(), np.random.default_rng(9))
    np.testing.assert_array_equal(a.rir, b.rir)
    assert a.metadata() == b.metadata()


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="distance_range"):
        RoomConfig(distance_range=(1.0, 9.5))
    with pytest.raises(ValueError, match="height_range"):
        RoomConfig(height_range=(0.0, 3.0))


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    root = tmp_path_factory.mktemp("rooms")
    clean = root / "clean"
    clean.mkdir()
    for clip in load_fixtures().speech:
        sf.write(clean / f"{clip.uid}.wav", clip.read(), 16000)
    noise = root / "noise"
    (noise / "hiss").mkdir(parents=True)
    for clip in load_fixtures().noise:
        sf.write(noise / "hiss" / f"{clip.uid}.wav", clip.read(), 16000)
    out = root / "out"
    args = ["--speech", str(clean), "--out", str(out), "--noise", str(noise)]
    args += ["--split", "cv", "--rt60", "0.2", "0.5", "--snr", "0", "15"]
    rooms.main(args)
    return root, out, args


def test_folder_tool_writes_whamr_layout(simulated):
    _, out, _ = simulated
    base = out / "wav16k" / "min" / "cv"
    names = [
        sorted(p.name for p in (base / sub).iterdir()) for sub in WHAMR_FOLDERS
    ]
    assert all(n == names[0] for n in names) and len(names[0]) == 3
    with open(out / "metadata" / "cv.csv", newline="") as fin:
        rows = list(csv.DictReader(fin))
    assert sorted(f"{r['id']}.wav" for r in rows) == names[0]
    for row in rows:
        read = {
            sub: sf.read(base / sub / f"{row['id']}.wav")[0]
            for sub in WHAMR_FOLDERS
        }
        mix, reverb, noise = (
            read["mix_single_reverb"],
            read["s1_reverb"],
            read["noise"],
        )
        assert len({x.size for x in read.values()}) == 1
        assert np.max(np.abs(mix - reverb - noise)) <= 2 / 32768
        snr = 10 * np.log10(active_speech_level(reverb)[0] / power(noise))
        assert snr == pytest.approx(float(row["snr_db"]), abs=0.02)
        assert 0.2 <= float(row["rt60"]) <= 0.5
        assert row["noise_type"] in ("hiss", "white", "pink", "brown")
        assert row["spk_id"] == "clean"  # the folder's name


def test_folder_tool_is_cached_and_protected(simulated, monkeypatch):
    root, out, args = simulated
    stamp = out / "metadata" / "cv.minidata.json"
    before = stamp.stat().st_mtime_ns

    def fail(*a, **k):
        raise AssertionError("cached: nothing may be simulated")

    monkeypatch.setattr(rooms, "simulate_split", fail)
    rooms.main(args)
    assert stamp.stat().st_mtime_ns == before
    assert json.loads(stamp.read_text())["split"] == "cv"
    with pytest.raises(FileExistsError, match="other options"):
        rooms.main(args + ["--seed", "5"])


def test_folder_tool_rejects_wrong_rate(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(800), 8000)
    with pytest.raises(ValueError, match="not at 16000 Hz"):
        simulate_folder(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="No .wav or .flac"):
        simulate_folder(tmp_path / "missing", tmp_path / "out")


def test_cli_help(capsys):
    with pytest.raises(SystemExit):
        rooms.main(["--help"])
    text = capsys.readouterr().out
    assert "--rt60" in text and "--direct-ms" in text
    assert DEFAULT_SAMPLES.is_dir()
