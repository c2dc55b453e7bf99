"""The VoiceBank-DEMAND recipe end to end, on a fake 48 kHz corpus, on CPU.

Stage 1 is interrupted in its second epoch and resumed; stage 2 caches two
stage-1 samples per utterance, trains in bf16 autocast, tests the three
systems with the ELBO terms and exports; a two-process torchrun (gloo) run
splits the training batches across ranks (in bf16 autocast). The tiny presets of
``hparams/overrides`` keep all of it to about a minute on two cores.
"""

import csv
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_elbo.brains import ScoreBrain
from speechbrain_elbo.export import load_enhancer
from speechbrain_elbo.metrics import si_sdr
from speechbrain_elbo.pipeline import utterance_seed

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "VoiceBank-DEMAND"
HPARAMS = RECIPE / "hparams"
TINY = ["--device=cpu", "--noprogressbar", "--num_workers=0"]


def make_fake_voicebank(
    root,
    speakers=("p226", "p227", "p228"),
    per_speaker=2,
    test_files=2,
    seconds=1.0,
    rate=48000,
    seed=0,
):
    """VoiceBank-DEMAND's layout with synthetic voiced 'speech' and noise."""
    rng = np.random.default_rng(seed)
    root = pathlib.Path(root)
    names = {
        "train": [
            f"{s}_{i:03d}" for s in speakers for i in range(1, per_speaker + 1)
        ],
        "test": [f"p232_{i:03d}" for i in range(1, test_files + 1)],
    }
    folders = {
        "train": ("clean_trainset_28spk_wav", "noisy_trainset_28spk_wav"),
        "test": ("clean_testset_wav", "noisy_testset_wav"),
    }
    t = np.arange(int(seconds * rate)) / rate
    for subset, (clean_dir, noisy_dir) in folders.items():
        for folder in (clean_dir, noisy_dir):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names[subset]:
            f0 = rng.uniform(100, 220)
            voice = sum(
                np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k
                for k in range(1, 8)
            )
            envelope = (
                np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 2
            )
            clean = 0.2 * voice * envelope / np.abs(voice).max()
            noisy = clean + 0.05 * rng.standard_normal(t.size)
            sf.write(
                root / clean_dir / f"{name}.wav", clean, rate, subtype="PCM_16"
            )
            sf.write(
                root / noisy_dir / f"{name}.wav", noisy, rate, subtype="PCM_16"
            )
    return root


def load_script(name):
    spec = importlib.util.spec_from_file_location(
        f"vb_{name}", RECIPE / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


class Interrupted(Exception):
    """Stands for a killed job."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run faster on one thread on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Stage 1, interrupted in epoch 2 and started again."""
    root = tmp_path_factory.mktemp("voicebank")
    data = make_fake_voicebank(root / "data")
    out = root / "score"
    args = [
        str(HPARAMS / "score.yaml"),
        f"--data_folder={data}",
        f"--output_folder={out}",
        "--overrides_file",
        str(HPARAMS / "overrides" / "tiny_score.yaml"),
        "--sampler_steps=2",
        "--valid_enhance_utterances=1",
        *TINY,
    ]
    script = load_script("train_score")
    original = ScoreBrain.fit_batch

    def interrupt(self, batch):
        if self.hparams.epoch_counter.current == 2:
            raise Interrupted
        return original(self, batch)

    ScoreBrain.fit_batch = interrupt
    try:
        with pytest.raises(Interrupted):
            script.main(args)
    finally:
        ScoreBrain.fit_batch = original
    first_log = (out / "train_log.txt").read_text()
    brain = script.main(args)
    return SimpleNamespace(
        root=root, data=data, out=out, brain=brain, first_log=first_log
    )


def epoch_lines(log):
    return [
        line.split(",")[0]
        for line in log.splitlines()
        if line.startswith("epoch:")
    ]


def test_stage1_resumes_with_its_epoch_counter(stage1):
    assert epoch_lines(stage1.first_log) == ["epoch: 1"]
    final_log = (stage1.out / "train_log.txt").read_text()
    assert epoch_lines(final_log) == ["epoch: 1", "epoch: 2"]
    # the test ran with the best checkpoint (by validation PESQ)
    best = stage1.brain.checkpointer.find_checkpoint(max_key="pesq")
    assert stage1.brain.hparams.epoch_counter.current == best.meta["epoch"]
    # the newest checkpoint holds epoch 2 and an EMA that went on from
    # epoch 1: 4 training files, batch 2, 2 epochs -> 4 updates
    checkpoints = sorted((stage1.out / "save").glob("CKPT+*"))
    newest = checkpoints[-1]
    assert (newest / "counter.ckpt").read_text() == "2"
    ema = torch.load(newest / "ema.ckpt", weights_only=True)
    assert int(ema["n_averaged"]) == 4


def test_stage1_test_results_and_export(stage1):
    rows = {
        row["system"]: row for row in read_rows(stage1.out / "test_results.csv")
    }
    assert set(rows) == {"noisy", "stage1"}
    assert rows["stage1"]["utterances"] == "2"
    assert rows["stage1"]["nfe"] == "2"  # 2 PC steps without corrector
    assert float(rows["stage1"]["rtf"]) > 0
    for key in ("pesq", "estoi", "si_sdr"):
        assert rows["noisy"][key] not in ("", "nan")
    per_utterance = read_rows(stage1.out / "test_per_utterance.csv")
    assert len(per_utterance) == 4
    # the export holds the EMA weights, and loads through its Pretrainer
    model = load_enhancer(stage1.out / "model")
    exported = model.backbone.state_dict()
    ema = stage1.brain.ema_net.backbone.state_dict()
    assert exported.keys() == ema.keys()
    assert all(torch.equal(exported[k], ema[k].cpu()) for k in ema)
    assert model.sampler.steps == 2 and model.sampler.corrector_steps == 0


def _enhanced_si_sdr(folder, manifest, row):
    """SI-SDR of the exported model on one test file, with the test's seed."""
    from speechbrain_elbo.inference import DiffusionEnhancement

    entry = json.loads(manifest.read_text())[row["id"]]
    noisy, _ = sf.read(entry["noisy_wav"], dtype="float32")
    clean, _ = sf.read(entry["clean_wav"], dtype="float32")
    enhancer = DiffusionEnhancement.from_hparams(source=folder)
    enhanced = enhancer.enhance_batch(
        torch.from_numpy(noisy), seed=utterance_seed(1234, row["id"])
    )
    return si_sdr(enhanced, torch.from_numpy(clean)).item()


def test_stage1_export_reproduces_the_test(stage1):
    rows = read_rows(stage1.out / "test_per_utterance.csv")
    row = next(r for r in rows if r["system"] == "stage1")
    manifest = stage1.out / "prepared" / "test.json"
    value = _enhanced_si_sdr(stage1.out / "model", manifest, row)
    assert value == pytest.approx(float(row["si_sdr"]), abs=1e-3)


def test_stage2_end_to_end(stage1):
    out = stage1.root / "refiner"
    brain = load_script("train_refiner").main(
        [
            str(HPARAMS / "refiner.yaml"),
            f"--data_folder={stage1.data}",
            f"--stage1_folder={stage1.out / 'model'}",
            f"--prep_folder={stage1.out / 'prepared'}",
            f"--output_folder={out}",
            "--overrides_file",
            str(HPARAMS / "overrides" / "tiny_refiner.yaml"),
            "--number_of_epochs=1",
            "--samples_per_utterance=2",
            "--elbo_utterances=2",
            "--valid_enhance_utterances=1",
            "--precision=bf16",
            *TINY,
        ]
    )
    # cached once: 4 train + 2 valid utterances, 2 samples each
    assert len(list((out / "stage1_cache").glob("*/*.pt"))) == 12
    assert (out / "stage1_cache" / "cache_info.json").is_file()
    rows = {row["system"]: row for row in read_rows(out / "test_results.csv")}
    assert list(rows) == ["noisy", "stage1", "stage1+2"]
    assert int(rows["stage1+2"]["nfe"]) == int(rows["stage1"]["nfe"]) + 1
    assert rows["noisy"]["neg_elbo"] == ""
    for system in ("stage1", "stage1+2"):
        row = {k: float(v) for k, v in rows[system].items() if k != "system"}
        total = (
            row["elbo_prior"]
            + row["elbo_diffusion"]
            + row["elbo_reconstruction"]
        )
        assert row["neg_elbo"] == pytest.approx(total, abs=2e-4)
        assert row["elbo_utterances"] == 2
    # same draws of (t, z): only the reconstruction term may differ
    for key in ("elbo_prior", "elbo_diffusion"):
        assert rows["stage1"][key] == rows["stage1+2"][key]
    assert len(read_rows(out / "test_elbo_per_utterance.csv")) == 4
    assert brain.decoder_variances["source"].startswith("fitted on")
    two_stage = load_enhancer(out / "model")
    assert two_stage.refiner is not None
    assert (out / "model" / "refiner.ckpt").is_file()
    # results.csv describes the exported two-stage model
    row = next(
        r
        for r in read_rows(out / "test_per_utterance.csv")
        if r["system"] == "stage1+2"
    )
    manifest = stage1.out / "prepared" / "test.json"
    value = _enhanced_si_sdr(out / "model", manifest, row)
    assert value == pytest.approx(float(row["si_sdr"]), abs=1e-3)


@pytest.mark.parametrize("stage", ["score", "refiner"])
def test_prepare_only_prepares_and_stops(stage1, tmp_path, stage):
    prep, out = tmp_path / "prepared", tmp_path / "out"
    args = [
        str(HPARAMS / f"{stage}.yaml"),
        f"--data_folder={stage1.data}",
        f"--prep_folder={prep}",
        f"--output_folder={out}",
        "--overrides_file",
        str(HPARAMS / "overrides" / f"tiny_{stage}.yaml"),
        "--prepare_only",
        *TINY,
    ]
    if stage == "refiner":  # not loaded before the data is prepared
        args.append(f"--stage1_folder={tmp_path / 'not_needed'}")
    result = load_script(f"train_{stage}").main(args)
    assert result is None
    for split in ("train", "valid", "test"):
        assert (prep / f"{split}.json").is_file()
    # no experiment folder (the YAML's checkpointer only makes its folder)
    assert not (out / "hyperparams.yaml").exists()
    assert not (out / "log.txt").exists()


def test_torchrun_gloo_splits_batches(stage1):
    out = stage1.root / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(RECIPE / "train_score.py"),
        str(HPARAMS / "score.yaml"),
        f"--data_folder={stage1.data}",
        f"--prep_folder={stage1.out / 'prepared'}",
        f"--output_folder={out}",
        "--overrides_file",
        str(HPARAMS / "overrides" / "tiny_score.yaml"),
        "--distributed_backend=gloo",
        "--number_of_epochs=1",
        "--batch_size=1",
        "--sampler_steps=1",
        "--valid_enhance_utterances=1",
        "--precision=bf16",
        *TINY,
    ]
    result = subprocess.run(
        command,
        cwd=RECIPE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    # 4 training files, batch 1: two batches on each of the two ranks
    assert "train batches: [2, 2]" in log
    rows = {row["system"]: row for row in read_rows(out / "test_results.csv")}
    assert rows["stage1"]["utterances"] == "2"  # split, then gathered
    assert (out / "model" / "hyperparams.yaml").is_file()


def test_run_sh_rejects_bad_arguments(stage1, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    run = RECIPE / "run.sh"

    def call(*args):
        return subprocess.run(
            ["bash", str(run), *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert "usage" in call().stderr
    bad = call(stage1.data, tmp_path / "out", "--config", "huge")
    assert bad.returncode == 2 and "tiny, small or full" in bad.stderr
    typo = call(
        stage1.data, tmp_path / "out", "--config", "tiny", "--sigma_mx=1"
    )
    assert typo.returncode != 0
    assert "--sigma_mx is neither a SpeechBrain run option" in typo.stderr
    assert not (tmp_path / "out" / "score").exists()  # nothing ran


def test_run_sh_trains_stage2_on_an_imported_sgmse_model(
    imported_sgmse, tmp_path
):
    # docs/interop.md: stage 1 is an sgmse checkpoint, not trained here
    data = make_fake_voicebank(tmp_path / "data", per_speaker=1)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            "bash",
            str(RECIPE / "run.sh"),
            str(data),
            str(out),
            "--config=tiny",
            "--stage1",
            str(imported_sgmse),
            "--number_of_epochs=1",
            "--elbo_utterances=1",
            "--valid_enhance_utterances=1",
            *TINY,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[run.sh] stage1: not trained, given:" in result.stdout
    assert not (out / "score" / "model").exists()
    assert not list((out / "score").glob("save/CKPT*"))
    info = json.loads(
        (out / "refiner" / "stage1_cache" / "cache_info.json").read_text()
    )
    stage1 = load_enhancer(imported_sgmse)
    assert info["checksums"] == stage1.checksums
    rows = {row["system"]: row for row in read_rows(out / "results.csv")}
    assert list(rows) == ["noisy", "stage1", "stage1+2"]
    # the imported sampler: 2 PC steps, a predictor and a corrector each
    assert int(rows["stage1"]["nfe"]) == 4
    two_stage = load_enhancer(out / "model")
    assert type(two_stage.backbone) is type(stage1.backbone)
    assert (
        two_stage.checksums["score_model.ckpt"]
        == (stage1.checksums["score_model.ckpt"])
    )
    card = json.loads((out / "model" / "model_card.json").read_text())
    source = card["model_card"]["stage1_source"]
    assert source["format"] == "sgmse 0.1.2 Lightning checkpoint"
    assert source["file"] == "ncsnpp_small.ckpt"  # a name, not a path


def test_run_sh_refuses_a_stage1_that_is_not_a_model(stage1, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            "bash",
            str(RECIPE / "run.sh"),
            str(stage1.data),
            str(tmp_path / "out"),
            "--stage1",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "is not a from_hparams folder" in result.stderr
    assert "speechbrain-elbo-import" in result.stderr
