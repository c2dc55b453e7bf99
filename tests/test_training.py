"""The training side: Brains and EMA, the recipe helpers (argument parsing,
the driver's routing), the frozen stage 1 from an export, the stage-1 cache.

The losses of both stages are tested in ``tests/test_losses.py``.
"""

import csv
import json
import logging
import math
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.train_logger import FileTrainLogger

from speechbrain_elbo.brains import RefinerBrain, ScoreBrain, make_ema
from speechbrain_elbo.cache import (
    CacheMismatchError,
    Stage1Cache,
    cache_settings,
    generate_stage1_cache,
    make_refiner_datasets,
)
from speechbrain_elbo.elbo import decoder_input
from speechbrain_elbo.export import export_enhancer, load_enhancer
from speechbrain_elbo.fileio import write_csv_atomic
from speechbrain_elbo.losses import build_score_loss
from speechbrain_elbo.metrics import si_sdr
from speechbrain_elbo.pipeline import enhance_waveforms, utterance_seed
from speechbrain_elbo.pretrained import pretrained_path
from speechbrain_elbo.recipe import (
    init_refiner,
    init_score,
    parse_arguments,
    stage_arguments,
)
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.score import ScoreModel
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

ROOT = pathlib.Path(__file__).resolve().parents[1]
STAGE_ARGS = ROOT / "tools" / "stage_args.py"
SDE = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)


class ToyBackbone(torch.nn.Module):
    """A 1x1 convolution with the interface of NCSNpp."""

    frame_multiple = 1

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 2, 1)
        self.config = {}

    def forward(self, x, cond):
        return self.conv(x)


def tiny_backbone():
    with open(ROOT / "hparams/models/tiny.yaml", encoding="utf-8") as handle:
        return load_hyperpyyaml(handle)["score_model"]


# -- EMA -----------------------------------------------------------------------
def test_ema_follows_the_closed_form():
    net = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(net, decay=0.9)
    values = [1.0, 2.0, 4.0, -1.0]
    expected = None
    for value in values:
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update_parameters(net)
        expected = value if expected is None else 0.9 * expected + 0.1 * value
    assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert int(ema.n_averaged) == len(values)
    assert not any(p.requires_grad for p in ema.parameters())
    with pytest.raises(ValueError, match="ema_decay"):
        make_ema(net, decay=1.0)


def test_ema_is_restored_by_the_checkpointer(tmp_path):
    net = torch.nn.Linear(2, 2)
    ema = make_ema(net, 0.5)
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update_parameters(net)
    Checkpointer(tmp_path, {"ema": ema}).save_checkpoint()
    fresh = make_ema(torch.nn.Linear(2, 2), 0.5)
    Checkpointer(tmp_path, {"ema": fresh}).recover_if_possible()
    assert int(fresh.n_averaged) == 3
    assert torch.equal(fresh.module.weight, ema.module.weight)


# -- small helpers -----------------------------------------------------------
def test_utterance_seed_and_csv(tmp_path):
    assert utterance_seed(1, "a") == utterance_seed(1, "a")
    assert (
        len(
            {
                utterance_seed(s, u, k)
                for s in (1, 2)
                for u in "ab"
                for k in (0, 1)
            }
        )
        == 8
    )
    # the CSV files of the Brains: 4 decimals, NaN as "nan", empty if absent
    path = tmp_path / "x.csv"
    write_csv_atomic(
        path,
        [{"system": "s", "pesq": float("nan"), "nfe": 3}],
        ["system", "pesq", "nfe"],
        float_digits=4,
    )
    assert path.read_text().splitlines() == ["system,pesq,nfe", "s,nan,3"]


def test_parse_arguments_with_overrides_files(tmp_path):
    (tmp_path / "presets").mkdir()
    first = tmp_path / "presets" / "a.yaml"
    first.write_text(
        "lr: 0.1\nmodel: !include:../models/m.yaml\nbatch_size: 4\n"
    )
    second = tmp_path / "b.yaml"
    second.write_text("batch_size: 8\n")
    _, run_opts, overrides = parse_arguments(
        [
            "h.yaml",
            f"--overrides_file={first}",
            "--overrides_file",
            str(second),
            "--lr=0.5",
            "--device=cpu",
        ]
    )
    assert run_opts["device"] == "cpu"
    lines = overrides.strip().splitlines()
    assert "lr: 0.5" in lines  # the command line wins
    assert "batch_size: 8" in lines  # the later file wins
    include = (tmp_path / "models" / "m.yaml").as_posix()
    assert f"model: !include:{include}" in lines  # relative to the file
    with pytest.raises(FileNotFoundError, match="no such file"):
        parse_arguments(
            ["h.yaml", "--overrides_file", str(tmp_path / "no.yaml")]
        )


def test_stage_arguments_routes_overrides(tmp_path):
    score = tmp_path / "score.yaml"
    score.write_text("loss: sigma2\nbatch_size: 8\n")
    refiner = tmp_path / "refiner.yaml"
    refiner.write_text("spec_weight: 1.0\nbatch_size: 8\n")
    args = [
        "--loss=likelihood",
        "--batch_size",
        "2",
        "--spec_weight=0.5",
        "--precision",
        "bf16",
        "--noprogressbar",
    ]
    assert stage_arguments(args, score, [refiner]) == [
        "--loss=likelihood",
        "--batch_size",
        "2",
        "--precision",
        "bf16",
        "--noprogressbar",
    ]
    assert stage_arguments(args, refiner, [score]) == [
        "--batch_size",
        "2",
        "--spec_weight=0.5",
        "--precision",
        "bf16",
        "--noprogressbar",
    ]
    with pytest.raises(ValueError, match="--sigma_mx is neither"):
        stage_arguments(["--sigma_mx=1"], score, [refiner])


def test_stage_prefixed_overrides_win_in_their_stage(tmp_path):
    score = tmp_path / "score.yaml"
    score.write_text("number_of_epochs: 200\nlr: 0.1\n")
    refiner = tmp_path / "refiner.yaml"
    refiner.write_text("number_of_epochs: 50\nlr: 0.1\n")
    args = [
        "--refiner.number_of_epochs=10",
        "--number_of_epochs=60",
        "--score.lr",
        "0.5",
        "--lr=0.2",
        "--device=cpu",
    ]
    assert stage_arguments(args, score, [refiner]) == [
        "--number_of_epochs=60",
        "--lr",
        "0.5",
        "--device=cpu",
    ]
    assert stage_arguments(args, refiner, [score]) == [
        "--number_of_epochs=10",
        "--lr=0.2",
        "--device=cpu",
    ]
    with pytest.raises(ValueError, match="spec_weight is not a key of the "):
        stage_arguments(["--refiner.spec_weight=1"], score, [refiner])
    with pytest.raises(ValueError, match="--stage3.lr is neither"):
        stage_arguments(["--stage3.lr=1"], score, [refiner])


# -- ScoreBrain on a toy network ---------------------------------------------
def toy_dataset(count=3, samples=4000):
    g = torch.Generator().manual_seed(0)
    data = {}
    for index in range(count):
        clean = 0.3 * torch.randn(samples, generator=g)
        data[f"u{index}"] = {
            "noisy_sig": clean + 0.1 * torch.randn(samples, generator=g),
            "clean_sig": clean,
        }
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id", "noisy_sig", "clean_sig"])
    return dataset


def toy_brain(
    loss_fn,
    max_grad_norm=0.0,
    patience=3,
    checkpointer=None,
    lr=None,
    **extra,
):
    hparams = {
        "sde": SDE,
        "transform": SpectralTransform(),
        "loss_fn": loss_fn,
        "sampler": Sampler("euler", 1),
        "valid_sampler": Sampler("euler", 1),
        "ema_decay": 0.5,
        "sample_rate": 16000,
        "valid_enhance_utterances": 0,
        "seed": 0,
        "max_grad_norm": max_grad_norm,
        **extra,
    }
    if lr is not None:
        hparams["lr"] = lr
    modules = {"score_model": ScoreModel(ToyBackbone(), SDE)}
    if checkpointer is not None:
        checkpointer.add_recoverable("score_model", modules["score_model"])
    return ScoreBrain(
        modules,
        lambda params: torch.optim.SGD(params, lr=0.1),
        hparams,
        run_opts={
            "device": "cpu",
            "noprogressbar": True,
            "nonfinite_patience": patience,
        },
        checkpointer=checkpointer,
    )


def test_resuming_applies_a_changed_lr(tmp_path, caplog):
    first = toy_brain(None, checkpointer=Checkpointer(tmp_path))
    first.on_fit_start()
    first.optimizer.param_groups[0]["lr"] = 0.3
    first.checkpointer.save_checkpoint()
    # without an lr in the hparams the saved one comes back
    kept = toy_brain(None, checkpointer=Checkpointer(tmp_path))
    kept.on_fit_start()
    assert kept.optimizer.param_groups[0]["lr"] == 0.3
    # with --lr=0.01 on the command line the new one is used, and logged
    changed = toy_brain(None, checkpointer=Checkpointer(tmp_path), lr=0.01)
    with caplog.at_level(logging.INFO):
        changed.on_fit_start()
    assert changed.optimizer.param_groups[0]["lr"] == 0.01
    assert "Learning rate 0.3 -> 0.01" in caplog.text
    # a scheduler owns the rate: the resumed one is kept
    scheduled = toy_brain(None, checkpointer=Checkpointer(tmp_path), lr=0.01)
    scheduled.hparams.lr_annealing = object()
    scheduled.on_fit_start()
    assert scheduled.optimizer.param_groups[0]["lr"] == 0.3


def test_nonfinite_loss_skips_the_step(caplog):
    calls = []
    loss = build_score_loss("sigma2", SDE)

    def flaky(model, x0, y, generator=None, mask=None):
        calls.append(1)
        value = loss(model, x0, y, generator, mask)
        return value * float("nan") if len(calls) == 1 else value

    brain = toy_brain(flaky)
    assert brain.max_grad_norm == math.inf  # 0 disables clipping
    before = brain.modules.score_model.backbone.conv.weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        brain.fit(
            range(1, 2), toy_dataset(3), train_loader_kwargs={"batch_size": 1}
        )
    assert "Non-finite training loss" in caplog.text
    assert "skipping this step" in caplog.text
    assert brain.optimizer_step == 2  # 3 batches, one skipped
    assert int(brain.ema.n_averaged) == 2
    assert brain.train_stats["skipped"] == 1
    assert brain.train_stats["batches"] == [2]
    after = brain.modules.score_model.backbone.conv.weight
    assert not torch.equal(before, after)


def test_nonfinite_patience_stops_training():
    def always_nan(model, x0, y, generator=None, mask=None):
        return model(
            x0, y, torch.full((x0.shape[0],), 0.5)
        ).abs().mean() * float("inf")

    brain = toy_brain(always_nan, patience=1)
    with pytest.raises(ValueError, match="not finite for 2 batches"):
        brain.fit(
            range(1, 2), toy_dataset(3), train_loader_kwargs={"batch_size": 1}
        )


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_score_brain_tests_with_the_inference_pipeline(tmp_path):
    brain = toy_brain(
        build_score_loss("sigma2", SDE),
        test_csv=tmp_path / "test.csv",
        test_utterance_csv=tmp_path / "utterances.csv",
        train_logger=FileTrainLogger(tmp_path / "log.txt"),
        save_enhanced=True,
        enhanced_folder=tmp_path / "enhanced",
    )
    dataset = toy_dataset(2, samples=8000)
    brain.evaluate(dataset, test_loader_kwargs={"batch_size": 1})
    rows = {row["system"]: row for row in read_rows(tmp_path / "test.csv")}
    assert list(rows) == ["noisy", "stage1"]
    assert rows["stage1"]["nfe"] == "1" and float(rows["stage1"]["rtf"]) > 0
    assert len(read_rows(tmp_path / "utterances.csv")) == 4
    assert len(brain.test_utterances) == 4
    # the saved estimate is the pipeline's with the utterance's seed
    generator = torch.Generator().manual_seed(utterance_seed(0, "u1"))
    expected = enhance_waveforms(
        dataset[1]["noisy_sig"][None],
        brain.hparams.transform,
        brain.ema_net,
        SDE,
        brain.hparams.sampler,
        generator=generator,
    ).stage1[0]
    saved, rate = sf.read(tmp_path / "enhanced" / "stage1" / "u1.wav")
    assert rate == 16000
    # saved files are within full scale: divided by their peak beyond it
    expected = expected / max(1.0, float(expected.abs().max()))
    assert np.abs(saved).max() <= 1.0
    assert np.allclose(saved, expected.numpy(), atol=1e-6)


class ToyRefiner(torch.nn.Module):
    """x_hat scaled by a learnt factor; inputs padded to 4 frames."""

    frame_multiple = 4

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.8))

    def forward(self, x_hat, y):
        return x_hat * self.gain

    def decode(self, x0_hat, y):
        return self(x0_hat, y)


def toy_refiner_brain(tmp_path, refiner=None, **changes):
    """A RefinerBrain with a toy refiner (or ``refiner``) over a toy
    stage 1."""
    backbone = ToyBackbone()
    stage1 = SimpleNamespace(
        score_model=ScoreModel(backbone, SDE).eval(),
        backbone=backbone,
        sde=SDE,
        transform=SpectralTransform(),
        sampler=Sampler("euler", 2),
    )
    hparams = {
        "ema_decay": 0.5,
        "sample_rate": 16000,
        "valid_enhance_utterances": 0,
        "seed": 3,
        "spec_weight": 1.0,
        "mag_weight": 0.0,
        "time_weight": 0.0,
        "test_csv": tmp_path / "test.csv",
        "test_utterance_csv": tmp_path / "utterances.csv",
        "elbo_csv": tmp_path / "elbo.csv",
        "elbo_diffusion_samples": 2,
        "elbo_reconstruction_samples": 1,
        "elbo_utterances": 1,
        "decoder_fit_batches": 1,
        "forward_share": 0.5,
        "relative_loss": False,
        "level_crops": 4,
        "train_logger": FileTrainLogger(tmp_path / "log.txt"),
        **changes,
    }
    brain = RefinerBrain(
        {"refiner": ToyRefiner() if refiner is None else refiner},
        lambda params: torch.optim.SGD(params, lr=0.1),
        hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
        stage1=stage1,
    )
    return brain, stage1


def test_refiner_brain_tests_both_stages_from_one_sample(tmp_path):
    torch.manual_seed(0)
    brain, stage1 = toy_refiner_brain(tmp_path)
    dataset = toy_dataset(2, samples=6000)
    brain.evaluate(dataset, test_loader_kwargs={"batch_size": 1})
    rows = {row["system"]: row for row in read_rows(tmp_path / "test.csv")}
    assert list(rows) == ["noisy", "stage1", "stage1+2"]
    assert (rows["stage1"]["nfe"], rows["stage1+2"]["nfe"]) == ("2", "3")
    assert rows["stage1"]["elbo_utterances"] == "1"
    assert rows["stage1"]["elbo_prior"] == rows["stage1+2"]["elbo_prior"]
    assert brain.decoder_variances["source"] == "default"
    assert len(read_rows(tmp_path / "elbo.csv")) == 2
    # both stages come from one sample of the pipeline, padded for both
    # networks, as the exported two-stage model enhances
    generator = torch.Generator().manual_seed(utterance_seed(3, "u0"))
    expected = enhance_waveforms(
        dataset[0]["noisy_sig"][None],
        stage1.transform,
        stage1.score_model,
        SDE,
        stage1.sampler,
        refiner=brain.ema_net,
        generator=generator,
        frame_multiple=4,
    )
    scores = {
        (row["id"], row["system"]): float(row["si_sdr"])
        for row in brain.test_utterances
    }
    clean = dataset[0]["clean_sig"][None]
    for system, wav in (
        ("stage1", expected.stage1),
        ("stage1+2", expected.refined),
    ):
        value = si_sdr(wav, clean)[0].item()
        assert scores[("u0", system)] == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_refiner_training_mixes_in_the_elbo_decoder_input(tmp_path, share):
    # docs/method.md section 7: a forward_share of the training inputs are
    # Tweedie estimates of forward states at t_eps, the decoder's input
    brain, stage1 = toy_refiner_brain(tmp_path, forward_share=share)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 1, 8, 8, dtype=torch.complex64, generator=g)
    y = x0 + 0.5 * torch.randn(3, 1, 8, 8, dtype=torch.complex64, generator=g)
    x_hat = torch.zeros_like(x0)
    mask = torch.ones(3, 1, 1, 8)
    torch.manual_seed(5)
    mixed, kinds = brain._mix_decoder_inputs(x_hat, y, x0, mask)
    assert kinds.tolist() == [int(share)] * 3
    if share == 0.0:
        assert torch.equal(mixed, x_hat)
        return
    torch.manual_seed(5)
    torch.rand(3)  # the draw of which inputs are replaced
    expected = decoder_input(stage1.score_model, SDE, x0, y)
    assert torch.allclose(mixed, expected.to(torch.complex64))
    # close to x0, unlike the cached input (zeros) it replaced
    assert (mixed - x0).abs().mean() < 0.2 * (x_hat - x0).abs().mean()


def test_refiner_validation_logs_the_decoder_gain(tmp_path):
    # the toy refiner scales its input by 0.8: it adds error to the
    # Tweedie estimate, so the gain is negative; at gain 1.0 it is 0 dB
    torch.manual_seed(0)
    brain, _ = toy_refiner_brain(tmp_path)
    brain.on_stage_start(sb.Stage.VALID)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 1, 8, 8, dtype=torch.complex64, generator=g)
    y = x0 + 0.3 * torch.randn(2, 1, 8, 8, dtype=torch.complex64, generator=g)
    mask = torch.ones(2, 1, 1, 8)
    brain._record_decoder_error(y, x0, mask)
    assert brain.valid_stats(0.0)["decoder_gain_db"] < 0.0
    brain.on_stage_start(sb.Stage.VALID)
    with torch.no_grad():
        brain.ema_net.gain.fill_(1.0)
    brain._record_decoder_error(y, x0, mask)
    assert brain.valid_stats(0.0)["decoder_gain_db"] == pytest.approx(0.0)


def test_stage_args_tool_prints_nul_separated_arguments(tmp_path):
    score = tmp_path / "score.yaml"
    score.write_text("loss: sigma2\nbatch_size: 8\n")
    refiner = tmp_path / "refiner.yaml"
    refiner.write_text("spec_weight: 1.0\nbatch_size: 8\n")

    def call(*args):
        return subprocess.run(
            [sys.executable, str(STAGE_ARGS), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    args = ["--loss=x", "--batch_size", "2", "--noprogressbar"]
    ok = call(refiner, score, "--", *args)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "--batch_size\x002\x00--noprogressbar\x00"
    typo = call(score, refiner, "--", "--sigma_mx=1")
    assert typo.returncode == 1
    assert "error: --sigma_mx is neither" in typo.stderr
    assert "usage" in call(score).stderr


# -- exported folders --------------------------------------------------------
def test_load_enhancer_round_trip(tmp_path):
    backbone = tiny_backbone()
    folder = export_enhancer(
        tmp_path / "model", backbone, SDE, SpectralTransform(), Sampler("pc", 5)
    )
    loaded = load_enhancer(folder)
    assert loaded.refiner is None and loaded.sampler.steps == 5
    assert loaded.sde.gns.sigma_max == 0.5
    x = torch.randn(1, 1, 256, 8, dtype=torch.complex64)
    t = torch.tensor([0.5])
    expected = ScoreModel(backbone.eval(), SDE)(x, x, t)
    assert torch.allclose(loaded.score_model(x, x, t), expected, atol=1e-5)
    assert not any(p.requires_grad for p in loaded.score_model.parameters())
    with open(folder / "score_model.ckpt", "ab") as handle:
        handle.write(b"0")
    with pytest.raises(ValueError, match="SHA-256"):
        load_enhancer(folder)
    with pytest.raises(FileNotFoundError, match="not an exported model"):
        load_enhancer(tmp_path)


# -- the stage-1 cache ---------------------------------------------------------
@pytest.fixture
def toy_stage1():
    torch.manual_seed(0)
    backbone = ToyBackbone()
    return SimpleNamespace(
        score_model=ScoreModel(backbone, SDE).eval(),
        backbone=backbone,
        sde=SDE,
        transform=SpectralTransform(),
        sampler=Sampler("euler", 2),
        checksums={"score_model.ckpt": "0" * 64},
    )


def write_manifest(folder, lengths):
    g = torch.Generator().manual_seed(1)
    entries = {}
    for index, samples in enumerate(lengths):
        uid = f"p226_{index:03d}"
        clean = 0.3 * torch.randn(samples, generator=g)
        noisy = clean + 0.1 * torch.randn(samples, generator=g)
        for role, wav in (("noisy", noisy), ("clean", clean)):
            sf.write(folder / f"{role}_{uid}.wav", wav.numpy(), 16000)
        entries[uid] = {
            "noisy_wav": str(folder / f"noisy_{uid}.wav"),
            "clean_wav": str(folder / f"clean_{uid}.wav"),
            "length": samples / 16000,
        }
    path = folder / "valid.json"
    path.write_text(json.dumps(entries))
    return path, entries


def test_cache_generation_is_resumable_and_reproducible(tmp_path, toy_stage1):
    manifest, entries = write_manifest(tmp_path, [3000, 5000])
    cache = Stage1Cache(tmp_path / "cache", samples_per_utterance=2)
    cache.claim(cache_settings(toy_stage1, seed=7))
    written = generate_stage1_cache(
        cache, "valid", manifest, toy_stage1, seed=7, progress=False
    )
    assert written == 4
    first = cache.load("valid", "p226_001", 1)
    assert first.shape == (1, 256, 5000 // 128 + 1)
    assert not torch.equal(first, cache.load("valid", "p226_001", 0))
    # resume: only the missing file is made again, identically
    cache.path("valid", "p226_001", 1).unlink()
    kept = cache.path("valid", "p226_000", 0).stat().st_mtime_ns
    assert (
        generate_stage1_cache(
            cache, "valid", manifest, toy_stage1, seed=7, progress=False
        )
        == 1
    )
    assert torch.equal(cache.load("valid", "p226_001", 1), first)
    assert cache.path("valid", "p226_000", 0).stat().st_mtime_ns == kept
    # other settings: an error unless regeneration is asked for
    with pytest.raises(CacheMismatchError, match="seed"):
        cache.claim(cache_settings(toy_stage1, seed=8))
    cache.claim(cache_settings(toy_stage1, seed=8), regenerate=True)
    assert cache.missing("valid", list(entries)) == [
        (u, k) for u in sorted(entries) for k in (0, 1)
    ]


def test_refiner_crops_are_aligned(tmp_path, toy_stage1):
    manifest, _ = write_manifest(tmp_path, [3000, 9000])
    cache = Stage1Cache(tmp_path / "cache")
    generate_stage1_cache(cache, "valid", manifest, toy_stage1, progress=False)
    datasets = make_refiner_datasets(
        {"valid": manifest}, cache, toy_stage1.transform, crop_frames=40
    )
    long_item = datasets["valid"][1]  # 71 frames, centred crop of 40
    assert long_item["xhat_spec"].shape == (2, 256, 40)
    x_hat = cache.load("valid", "p226_001", 0)
    start = (71 - 40) // 2
    expected = x_hat[..., start : start + 40]
    assert torch.equal(long_item["xhat_spec"][0], expected.real[0])
    assert torch.equal(long_item["xhat_spec"][1], expected.imag[0])
    assert long_item["frame_mask"].sum().item() == 40
    short_item = datasets["valid"][0]  # 24 frames, padded to 40
    assert short_item["frame_mask"].sum().item() == 24
    assert short_item["noisy_spec"][..., 24:].abs().sum().item() == 0
    # the noisy crop is the normalised noisy spectrogram of the utterance
    assert short_item["noisy_spec"].abs().max() > 0


def test_init_refiner_warm_starts_from_a_two_stage_folder(tiny_models, lobe):
    # refiner_init_folder: the refiner of an export initialises the recipe's
    _, two_stage = tiny_models
    fresh = lobe("refiner_tiny", "refiner")
    exported = load_enhancer(two_stage).refiner.state_dict()

    def same():
        state = fresh.state_dict()
        return all(torch.equal(state[k], v) for k, v in exported.items())

    init_refiner({"refiner": fresh, "refiner_init_folder": None})
    assert not same()  # null: the module stays as built
    init_refiner({"refiner": fresh, "refiner_init_folder": str(two_stage)})
    assert same()
    with pytest.raises(FileNotFoundError, match="refiner.ckpt"):
        init_refiner(
            {"refiner": fresh, "refiner_init_folder": str(two_stage.parent)}
        )


def test_init_score_warm_starts_from_an_export_or_a_bundled_name(
    tiny_models, lobe
):
    # score_init_folder: the score network of an export (or of a bundled
    # model, by name) initialises the recipe's; another layout is refused
    stage1, _ = tiny_models
    fresh = lobe("tiny", "score_model")
    exported = load_enhancer(stage1).score_model.backbone.state_dict()

    def same():
        state = fresh.state_dict()
        return all(torch.equal(state[k], v) for k, v in exported.items())

    init_score({"score_backbone": fresh, "score_init_folder": None})
    assert not same()  # null: the module stays as built
    init_score({"score_backbone": fresh, "score_init_folder": str(stage1)})
    assert same()
    small = lobe("small", "score_model")
    init_score({"score_backbone": small, "score_init_folder": "minivb-small"})
    bundled = load_enhancer(pretrained_path("minivb-small"))
    for key, value in bundled.score_model.backbone.state_dict().items():
        assert torch.equal(small.state_dict()[key], value.float())
    with pytest.raises(ValueError, match="does not match this recipe's"):
        init_score(
            {"score_backbone": fresh, "score_init_folder": "minivb-small"}
        )


def test_conditional_refiner_is_trained_at_measured_input_levels(
    tmp_path, toy_stage1, lobe
):
    # docs/method.md section 7: the refiner is told the error level of its
    # input, measured on the training crops for each kind of input
    manifest, _ = write_manifest(tmp_path, [3000, 5000, 4000])
    cache = Stage1Cache(tmp_path / "cache")
    generate_stage1_cache(cache, "valid", manifest, toy_stage1, progress=False)
    # the validation layout: centred crops, the same at every access
    train = make_refiner_datasets(
        {"valid": manifest}, cache, toy_stage1.transform, crop_frames=16
    )["valid"]
    refiner = lobe("refiner_tiny", "refiner")
    conditional = type(refiner)(**{**refiner.config, "conditional": True})
    brain, _ = toy_refiner_brain(
        tmp_path,
        refiner=conditional,
        forward_share=0.5,
        relative_loss=True,
        level_crops=2,
    )
    levels = brain.measure_input_levels(train)
    # by hand: the sampler outputs' RMS error over the first two crops
    errors, bins = 0.0, 0.0
    for index in range(2):
        item = train[index]
        mask = item["frame_mask"]
        diff = (item["xhat_spec"] - item["clean_spec"]) * mask
        errors += diff.pow(2).sum().item()
        bins += mask.sum().item() * item["clean_spec"].shape[1]
    assert levels["sample"] == pytest.approx(math.sqrt(errors / bins))
    assert 0 < levels["decoder"] < levels["sample"]
    before = conditional.backbone.output_layer.weight.clone()
    brain.fit(
        range(1),
        train,
        train_loader_kwargs={"batch_size": 2},
        progressbar=False,
    )
    for net in (conditional, brain.ema_net):
        assert net.sample_level.item() == pytest.approx(levels["sample"])
        assert net.decoder_level.item() == pytest.approx(levels["decoder"])
    assert not torch.equal(conditional.backbone.output_layer.weight, before)
