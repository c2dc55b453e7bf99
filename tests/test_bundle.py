"""Bundling a trained export as a package model."""

import json
import shutil

import pytest
import torch

from speechbrain_elbo.export import export_enhancer
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.pretrained import available, pretrained_path
from speechbrain_elbo.pretrained.bundle import bundle_model, main
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, lobe):
    root = tmp_path_factory.mktemp("run")
    sde = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)
    backbone = lobe("tiny", "score_model", seed=1)
    refiner = lobe("refiner_tiny", "refiner", seed=2)
    stage1 = export_enhancer(
        root / "score" / "model",
        backbone,
        sde,
        SpectralTransform(),
        Sampler("pc", 10),
        model_card={"task": "denoising", "stage": "1 (score model)"},
    )
    model = export_enhancer(
        root / "model",
        backbone,
        sde,
        SpectralTransform(),
        Sampler("pc", 10),
        refiner=refiner,
        model_card={"task": "denoising", "stage": "2 (refiner)"},
    )
    for stage in ("score", "refiner"):
        (root / stage).mkdir(exist_ok=True)
        (root / stage / "train_log.txt").write_text(
            f"epoch: 1, lr: 1.00e-04 - train loss: 1.0 ({stage})\n"
        )
    return root, stage1, model, backbone, refiner


def test_bundle_repacks_weights_sampler_card_and_logs(run_folder, tmp_path):
    root, stage1, model, backbone, refiner = run_folder
    folder = bundle_model(
        model,
        tmp_path / "minivb-test",
        sampler="euler",
        steps=4,
        card={"wall_time_h": 1.5},
        stage1_card=stage1 / "model_card.json",
        score_log=root / "score" / "train_log.txt",
        refiner_log=root / "refiner" / "train_log.txt",
    )
    card = json.loads((folder / "model_card.json").read_text())
    assert card["weights_dtype"] == "float16"
    assert card["default_sampler"]["name"] == "euler"
    assert card["default_sampler"]["steps"] == 4
    info = card["model_card"]
    assert info["stage"] == "2 (refiner)"
    assert info["stage1"]["stage"] == "1 (score model)"
    assert info["wall_time_h"] == 1.5
    assert "pc" in info["bundled_from"]["default_sampler_at_training"]
    card_md = (folder / "model_card.md").read_text()
    assert "- **stage1**:\n  - **task**: denoising\n" in card_md
    assert "(score)" in (folder / "train_log_score.txt").read_text()
    assert "(refiner)" in (folder / "train_log_refiner.txt").read_text()
    size = (folder / "score_model.ckpt").stat().st_size
    assert size < 0.6 * (model / "score_model.ckpt").stat().st_size
    enhancer = DiffusionEnhancement.from_hparams(
        source=folder, run_opts={"device": "cpu"}
    )
    assert enhancer.has_refiner
    assert enhancer.default_sampler.name == "euler"
    weight = next(iter(backbone.state_dict().items()))
    got = enhancer.mods.score_model.state_dict()[weight[0]]
    assert torch.equal(got, weight[1].half().float())


def test_bundle_errors_name_the_missing_file(run_folder, tmp_path, capsys):
    root, _, model, _, _ = run_folder
    with pytest.raises(FileNotFoundError, match="no-log.txt"):
        bundle_model(model, tmp_path / "x", score_log=root / "no-log.txt")
    assert main([str(tmp_path / "absent"), str(tmp_path / "y")]) == 1
    assert "bundle: error:" in capsys.readouterr().err


def test_bundled_models_name_no_machine_path_and_move(tmp_path):
    assert available()
    for name in available():
        folder = pretrained_path(name)
        text = (folder / "hyperparams.yaml").read_text()
        assert 'pretrained_path: "."' in text, name
        assert str(folder) not in text, name
        # a copy elsewhere loads, checksums verified, from its own files
        moved = shutil.copytree(folder, tmp_path / name)
        enhancer = DiffusionEnhancement.from_hparams(
            source=moved, run_opts={"device": "cpu"}
        )
        assert enhancer.hparams.pretrained_path == str(moved)
