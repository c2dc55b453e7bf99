"""The WHAMR! recipe end to end, on a tree simulated from the fixtures, on CPU.

The room simulation tool (``python -m speechbrain_elbo.minidata.rooms``)
turns the committed speech and noise fixtures into WHAMR!'s layout with
metadata; ``run.sh`` then runs both stages of the ``dereverb`` task for one
epoch with the tiny presets, and the two scripts run ``denoise_dereverb`` in
this process. The test metrics come overall and per bin of the measured RT60
and DRR of the test rooms.
"""

import csv
import json
import math
import os
import pathlib
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import fftconvolve

from speechbrain_elbo.export import load_enhancer
from speechbrain_elbo.minidata import DEFAULT_SAMPLES, load_fixtures, rooms

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "WHAMR"
HPARAMS = RECIPE / "hparams"
TINY = ["--device=cpu", "--noprogressbar", "--num_workers=0"]
#: Items per split of the fake tree, and the RT60 range of its rooms.
ITEMS = {"tr": 4, "cv": 2, "tt": 3}
RT60_RANGE = (0.2, 0.8)
#: Bins of score.yaml and refiner.yaml.
RT60_EDGES = [0.2, 0.4, 0.6, 0.8, 1.0]
METRICS = ("pesq", "estoi", "si_sdr")

# tiny networks run faster on one thread on a shared, busy machine
pytestmark = pytest.mark.usefixtures("one_thread")


def make_fake_whamr(root, items=ITEMS, rt60_range=RT60_RANGE, seed=0):
    """WHAMR!'s layout simulated from 1 s pieces of the speech fixtures."""
    root = pathlib.Path(root)
    bank = load_fixtures(DEFAULT_SAMPLES, segment_seconds=1.0)
    noise = root / "noise" / "ambient"
    noise.mkdir(parents=True)
    for clip in bank.noise:
        sf.write(noise / f"{clip.uid}.wav", clip.read(), 16000)
    clips = iter(bank.speech)
    for split, count in items.items():
        speech = root / "speech" / split
        speech.mkdir(parents=True)
        for _ in range(count):
            clip = next(clips)
            sf.write(speech / f"{clip.uid}.wav", clip.read(), 16000)
        rooms.main(
            [
                "--speech",
                str(speech),
                "--noise",
                str(noise.parent),
                "--out",
                str(root / "whamr"),
                "--split",
                split,
                "--seed",
                str(seed),
                "--rt60",
                *map(str, rt60_range),
            ]
        )
    return root / "whamr"


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def script_main(name):
    """``main`` of a recipe script (run as a module, not as __main__)."""
    return runpy.run_path(str(RECIPE / f"{name}.py"))["main"]


def run_sh(*args, timeout=600):
    # without OMP_NUM_THREADS, so that run.sh applies its threads rule
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run(
        ["bash", str(RECIPE / "run.sh"), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_fake_whamr(tmp_path_factory.mktemp("whamr"))


def check_bins(bins_csv, per_utterance_csv, manifest, systems):
    """The per-bin means are those of the per-utterance scores."""
    entries = json.loads(pathlib.Path(manifest).read_text())
    scores = read_rows(per_utterance_csv)
    rows = read_rows(bins_csv)
    assert {row["system"] for row in rows} == set(systems)
    assert {row["field"] for row in rows} == {"rt60", "drr"}
    for row in rows:
        low = float(row["low"]) if row["low"] else -math.inf
        high = float(row["high"]) if row["high"] else math.inf
        members = [
            s
            for s in scores
            if s["system"] == row["system"]
            and low <= entries[s["id"]][row["field"]] < high
        ]
        assert int(row["utterances"]) == len(members)
        for key in METRICS:
            values = [float(s[key]) for s in members]
            values = [v for v in values if math.isfinite(v)]
            if values:
                assert float(row[key]) == pytest.approx(
                    sum(values) / len(values), abs=2e-4
                )
            else:
                assert row[key] == "nan"
    for system in systems:
        for field in ("rt60", "drr"):
            counted = sum(
                int(r["utterances"])
                for r in rows
                if r["system"] == system and r["field"] == field
            )
            assert counted == len(entries)
    return rows


def test_simulated_tree_has_measured_rooms_and_aligned_targets(data):
    base = data / "wav16k" / "min"
    for split, count in ITEMS.items():
        rows = read_rows(data / "metadata" / f"{split}.csv")
        assert len(rows) == count
        for row in rows:
            # the measured RT60 lies in the configured range
            assert RT60_RANGE[0] <= float(row["rt60"]) <= RT60_RANGE[1]
            assert math.isfinite(float(row["drr"]))
    for row in read_rows(data / "metadata" / "tt.csv"):
        name = f"{row['id']}.wav"
        reverb, rate = sf.read(base / "tt" / "s1_reverb" / name)
        target, _ = sf.read(base / "tt" / "s1_anechoic" / name)
        mix, _ = sf.read(base / "tt" / "mix_single_reverb" / name)
        noise, _ = sf.read(base / "tt" / "noise" / name)
        clean, _ = sf.read(data.parent / "speech" / "tt" / f"{row['clip']}.wav")
        assert rate == 16000
        assert reverb.shape == target.shape == mix.shape == clean.shape
        # The target is the speech through the direct path (+ 2.5 ms) of the
        # input's room response, with the same delay: until 2.5 ms after the
        # direct path arrives, input and target are the same samples ...
        keep = int(row["direct_delay"]) + 41
        assert np.abs(reverb[:keep]).max() > 1e-3
        np.testing.assert_array_equal(reverb[:keep], target[:keep])
        assert np.abs(reverb[keep:] - target[keep:]).max() > 0.05
        # ... and the target is the clean speech delayed by the direct path
        xcorr = fftconvolve(target, clean[::-1])
        lags = np.arange(-clean.size + 1, target.size)
        near = np.abs(lags) <= 400
        peak = lags[near][np.argmax(np.abs(xcorr[near]))]
        assert abs(peak - int(row["direct_delay"])) <= 1
        np.testing.assert_allclose(mix, reverb + noise, atol=1e-4)


@pytest.fixture(scope="module")
def dereverb_run(data, tmp_path_factory):
    """run.sh, task dereverb, tiny presets, one epoch per stage."""
    out = tmp_path_factory.mktemp("run") / "out"
    args = [
        data,
        out,
        "--task",
        "dereverb",
        "--config",
        "tiny",
        "--number_of_epochs=1",
        "--sampler_steps=2",
        "--valid_enhance_utterances=1",
        "--elbo_utterances=2",
        *TINY,
    ]
    first = run_sh(*args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return out, args, first


def test_run_sh_dereverb_end_to_end(dereverb_run):
    out, _, result = dereverb_run
    for step in ("prepare", "stage1", "cache", "stage2"):
        assert f"[run.sh] {step}: done in" in result.stdout
    # the CPU preset runs on the free cores (speechbrain_elbo.runtime)
    threads = re.search(r"CPU preset tiny: (\d+) thread", result.stdout)
    assert threads and 1 <= int(threads[1]) <= os.cpu_count()
    assert (out / ".run_sh" / "choices").read_text().strip() == (
        "--task=dereverb"
    )
    test = json.loads((out / "prepared" / "test.json").read_text())
    assert len(test) == ITEMS["tt"]
    for entry in test.values():
        assert "/tt/s1_reverb/" in entry["noisy_wav"]
        assert "/tt/s1_anechoic/" in entry["clean_wav"]
        assert RT60_RANGE[0] <= entry["rt60"] <= RT60_RANGE[1]
    rows = {r["system"]: r for r in read_rows(out / "results.csv")}
    assert list(rows) == ["noisy", "stage1", "stage1+2"]
    assert rows["stage1"]["nfe"] == "2" and rows["stage1+2"]["nfe"] == "3"
    assert all(r["utterances"] == str(ITEMS["tt"]) for r in rows.values())
    assert rows["stage1"]["elbo_utterances"] == "2"
    bins = check_bins(
        out / "results_bins.csv",
        out / "refiner" / "test_per_utterance.csv",
        out / "prepared" / "test.json",
        ["noisy", "stage1", "stage1+2"],
    )
    labels = [r["bin"] for r in bins if r["system"] == "noisy"]
    assert labels[:4] == ["[0.2, 0.4)", "[0.4, 0.6)", "[0.6, 0.8)", "[0.8, 1)"]
    # stage 1 wrote its own bins (noisy and stage 1)
    check_bins(
        out / "score" / "test_bins.csv",
        out / "score" / "test_per_utterance.csv",
        out / "prepared" / "test.json",
        ["noisy", "stage1"],
    )
    model = load_enhancer(out / "model")
    assert model.refiner is not None and model.sampler.steps == 2
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["model_card"]["task"] == "WHAMR! dereverb (min version)"


def test_run_sh_resumes_and_guards_the_task(dereverb_run):
    out, args, _ = dereverb_run
    again = run_sh(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    for step in ("prepare", "stage1", "cache", "stage2"):
        assert f"[run.sh] {step}: already done, skipped" in again.stdout
    other = [a if a != "dereverb" else "denoise_dereverb" for a in args]
    switched = run_sh(*other)
    assert switched.returncode == 2
    assert "made with '--task=dereverb'" in switched.stderr
    assert "Use another OUTPUT_FOLDER" in switched.stderr


def test_run_sh_rejects_bad_arguments(data, tmp_path):
    usage = run_sh()
    assert usage.returncode == 2
    assert "[--task dereverb|denoise_dereverb]" in usage.stderr
    bad = run_sh(data, tmp_path / "out", "--task", "denoise")
    assert bad.returncode == 2
    assert (
        "--task must be one of dereverb, denoise_dereverb, not 'denoise'"
        in bad.stderr
    )
    config = run_sh(data, tmp_path / "out", "--task=dereverb", "--config=big")
    assert config.returncode == 2 and "tiny, small or full" in config.stderr
    missing = run_sh(tmp_path / "nowhere", tmp_path / "out")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "out" / "score").exists()  # nothing ran


def test_denoise_dereverb_both_stages(data, dereverb_run, tmp_path):
    common = [
        f"--data_folder={data}",
        f"--prep_folder={tmp_path / 'prepared'}",
        "--task=denoise_dereverb",
        "--number_of_epochs=1",
        "--valid_enhance_utterances=1",
        *TINY,
    ]
    score = script_main("train_score")(
        [
            str(HPARAMS / "score.yaml"),
            f"--output_folder={tmp_path / 'score'}",
            "--overrides_file",
            str(HPARAMS / "overrides" / "tiny_score.yaml"),
            "--sampler_steps=1",
            *common,
        ]
    )
    assert score.hparams.task == "denoise_dereverb"
    test = json.loads((tmp_path / "prepared" / "test.json").read_text())
    assert all(
        "/tt/mix_single_reverb/" in entry["noisy_wav"]
        for entry in test.values()
    )
    refiner = script_main("train_refiner")(
        [
            str(HPARAMS / "refiner.yaml"),
            f"--output_folder={tmp_path / 'refiner'}",
            f"--stage1_folder={tmp_path / 'score' / 'model'}",
            "--overrides_file",
            str(HPARAMS / "overrides" / "tiny_refiner.yaml"),
            "--elbo_utterances=1",
            *common,
        ]
    )
    assert len(refiner.test_utterances) == 3 * ITEMS["tt"]
    rows = {r["system"]: r for r in read_rows(refiner.hparams.test_csv)}
    assert list(rows) == ["noisy", "stage1", "stage1+2"]
    # the same targets as the dereverb task, with noise added to the input
    joint, reverb = (
        {
            r["id"]: float(r["si_sdr"])
            for r in read_rows(path)
            if r["system"] == "noisy"
        }
        for path in (
            refiner.hparams.test_utterance_csv,
            dereverb_run[0] / "refiner" / "test_per_utterance.csv",
        )
    )
    assert joint.keys() == reverb.keys()
    assert all(joint[uid] < reverb[uid] for uid in joint)
    check_bins(
        refiner.hparams.test_bins_csv,
        refiner.hparams.test_utterance_csv,
        tmp_path / "prepared" / "test.json",
        ["noisy", "stage1", "stage1+2"],
    )
    card = json.loads((tmp_path / "refiner/model/model_card.json").read_text())
    assert card["model_card"]["task"] == (
        "WHAMR! denoise_dereverb (min version)"
    )


def test_run_sh_dereverb_on_an_imported_sgmse_model(
    data, imported_sgmse, tmp_path
):
    # docs/interop.md: the refiner trained on a stage 1 from sgmse
    out = tmp_path / "out"
    result = run_sh(
        data,
        out,
        "--task=dereverb",
        "--config=tiny",
        f"--stage1={imported_sgmse}",
        "--number_of_epochs=1",
        "--elbo_utterances=1",
        "--valid_enhance_utterances=1",
        *TINY,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[run.sh] stage1: not trained, given:" in result.stdout
    assert not (out / "score" / "model").exists()
    rows = [row["system"] for row in read_rows(out / "results.csv")]
    assert rows == ["noisy", "stage1", "stage1+2"]
    two_stage = load_enhancer(out / "model")
    assert two_stage.refiner is not None
    assert (
        two_stage.checksums["score_model.ckpt"]
        == (load_enhancer(imported_sgmse).checksums["score_model.ckpt"])
    )
