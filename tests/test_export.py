"""Exporting an enhancer to a from_hparams folder, and loading it back."""

import inspect
import json
import os
import shutil

import pytest
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.interfaces import pretrained_from_hparams

from speechbrain_elbo.export import (
    HPARAMS_FILE,
    REFINER_CKPT,
    SCORE_CKPT,
    ModelFolderError,
    export_enhancer,
    file_sha256,
    load_enhancer,
    load_folder,
    module_from_yaml,
)
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.score import ScoreModel
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

pytestmark = pytest.mark.usefixtures("one_thread")


def raw_yaml(path):
    """The YAML as plain data: a ``!new:`` block becomes its kwargs dict."""

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", construct)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=Loader)


def components():
    sde = OUVESDE(GeometricGNS(0.05, 0.75), gamma=1.25, t_eps=0.02)
    transform = SpectralTransform(alpha=0.5, beta=0.2)
    return sde, transform, Sampler("euler", steps=7)


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory, lobe):
    torch.manual_seed(0)
    backbone = lobe("tiny", "score_model", seed=1)
    refiner = lobe("refiner_tiny", "refiner", seed=2)
    sde, transform, sampler = components()
    folder = tmp_path_factory.mktemp("export") / "two_stage"
    export_enhancer(
        folder,
        backbone,
        sde,
        transform,
        sampler,
        refiner=refiner,
        model_card={"name": "test model", "trained_on": "nothing"},
        sample_rate=16000,
    )
    return folder, backbone, refiner


def test_folder_contents_and_yaml(two_stage):
    folder, backbone, refiner = two_stage
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        HPARAMS_FILE,
        "model_card.json",
        "model_card.md",
        REFINER_CKPT,
        SCORE_CKPT,
    ]
    text = (folder / HPARAMS_FILE).read_text()
    # human-readable: every hyper-parameter written out by name
    for line in (
        "sigma_min: 0.05",
        "sigma_max: 0.75",
        "gamma: 1.25",
        "t_eps: 0.02",
        "beta: 0.2",
        'name: "euler"',
        "steps: 7",
        "ch_mult: [1, 2, 2, 2]",
        "fourier_scale: 16.0",
        "!new:speechbrain_elbo.lobes.ncsnpp.NCSNpp",
        "!new:speechbrain_elbo.lobes.refiner.Refiner",
        "!new:speechbrain.utils.parameter_transfer.Pretrainer",
        "score_model: !ref <pretrained_path>/score_model.ckpt",
        # no path of the exporting machine: the loader sets the folder
        'pretrained_path: "."',
    ):
        assert line in text, line
    assert str(folder) not in text and str(folder.parent) not in text
    with open(folder / HPARAMS_FILE) as handle:
        hparams = load_hyperpyyaml(handle)
    assert hparams["sde"].gns.sigma_max == 0.75
    assert hparams["sde"].gamma == 1.25
    assert hparams["transform"].beta == 0.2
    assert (hparams["sampler"].name, hparams["sampler"].steps) == ("euler", 7)
    assert hparams["sample_rate"] == 16000
    assert set(hparams["modules"]) == {"score_model", "refiner"}
    raw = raw_yaml(folder / HPARAMS_FILE)
    for name, module in (
        ("score_backbone", backbone),
        ("refiner", refiner),
    ):
        written = raw[name]
        # every constructor argument is written, with the module's value
        signature = inspect.signature(type(module).__init__).parameters
        assert set(signature) - {"self"} <= set(written), name
        for key, value in module.config.items():
            expected = list(value) if isinstance(value, tuple) else value
            assert written[key] == expected, (name, key)
    checksums = hparams["checksums"]
    assert checksums[SCORE_CKPT] == file_sha256(folder / SCORE_CKPT)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["stages"] == 2
    assert card["model_card"]["name"] == "test model"
    params = sum(p.numel() for p in backbone.parameters())
    assert card["score_backbone"]["parameters"] == params
    assert "test model" in (folder / "model_card.md").read_text()


def test_round_trip_weights_identical(two_stage):
    folder, backbone, refiner = two_stage
    enhancer = DiffusionEnhancement.from_hparams(
        source=folder, run_opts={"device": "cpu"}
    )
    for original, loaded in (
        (backbone, enhancer.mods.score_model),
        (refiner, enhancer.mods.refiner),
    ):
        want, got = original.state_dict(), loaded.state_dict()
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), key
    assert enhancer.has_refiner
    assert enhancer.sde.gamma == 1.25
    assert enhancer.default_sampler.name == "euler"
    # the loaded network computes what the exported one computed
    x = torch.randn(1, 4, 256, 16)
    cond = torch.tensor([-1.0])
    with torch.no_grad():
        backbone.eval()
        assert torch.allclose(
            backbone(x, cond), enhancer.mods.score_model(x, cond), atol=1e-6
        )


def test_savedir_links_and_moved_folder(two_stage, tmp_path):
    folder, _, _ = two_stage
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    savedir = tmp_path / "save"
    enhancer = DiffusionEnhancement.from_hparams(
        source=moved, savedir=savedir, run_opts={"device": "cpu"}
    )
    for name in (HPARAMS_FILE, SCORE_CKPT, REFINER_CKPT):
        link = savedir / name
        assert link.is_symlink(), name
        assert link.resolve() == (moved / name).resolve()
    assert enhancer.hparams.pretrained_path == str(moved.absolute())
    # the same savedir reused for another folder is re-linked, not stale
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    DiffusionEnhancement.from_hparams(source=other, savedir=savedir)
    assert (savedir / SCORE_CKPT).resolve() == (other / SCORE_CKPT).resolve()


def test_plain_speechbrain_loader_works_in_place(two_stage, monkeypatch):
    folder, _, _ = two_stage
    # SpeechBrain's own loader, with the folder given as pretrained_path ...
    enhancer = pretrained_from_hparams(
        DiffusionEnhancement,
        source=str(folder),
        overrides={"pretrained_path": str(folder)},
    )
    assert isinstance(enhancer, DiffusionEnhancement)
    # ... or run from inside the folder (pretrained_path is ".")
    monkeypatch.chdir(folder)
    enhancer = pretrained_from_hparams(DiffusionEnhancement, source=".")
    assert enhancer.has_refiner


@pytest.fixture
def copy_of(two_stage, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(two_stage[0], folder)
    return folder


def test_missing_checkpoint_named(copy_of):
    (copy_of / REFINER_CKPT).unlink()
    with pytest.raises(FileNotFoundError, match=REFINER_CKPT):
        DiffusionEnhancement.from_hparams(source=copy_of)


def test_missing_hyperparams_named(copy_of):
    (copy_of / HPARAMS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=HPARAMS_FILE):
        DiffusionEnhancement.from_hparams(source=copy_of)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DiffusionEnhancement.from_hparams(source=tmp_path / "nowhere")


def test_one_loader_sets_pretrained_path(two_stage, tmp_path):
    folder, _, _ = two_stage
    hparams = load_folder(folder, overrides={"sample_rate": 8000})
    assert hparams["pretrained_path"] == str(folder.absolute())
    assert hparams["sample_rate"] == 8000
    assert hparams["savedir"] is None
    with pytest.raises(ValueError, match="may not set pretrained_path"):
        load_folder(folder, overrides={"pretrained_path": str(tmp_path)})
    with pytest.raises(ValueError, match="may not set pretrained_path"):
        DiffusionEnhancement.from_hparams(
            source=folder, overrides={"pretrained_path": str(tmp_path)}
        )


def test_load_enhancer_round_trip(two_stage, copy_of, tmp_path):
    folder, backbone, refiner = two_stage
    loaded = load_enhancer(folder)
    assert loaded.folder == folder.absolute() and loaded.sample_rate == 16000
    assert loaded.sampler.steps == 7 and loaded.sde.gamma == 1.25
    assert set(loaded.checksums) == {SCORE_CKPT, REFINER_CKPT}
    x = torch.randn(1, 1, 256, 8, dtype=torch.complex64)
    t = torch.tensor([0.5])
    expected = ScoreModel(backbone.eval(), loaded.sde)(x, x, t)
    assert torch.allclose(loaded.score_model(x, x, t), expected, atol=1e-5)
    assert not any(p.requires_grad for p in loaded.score_model.parameters())
    assert not loaded.refiner.training
    with open(copy_of / SCORE_CKPT, "ab") as handle:
        handle.write(b"0")
    # a corrupt folder is a ModelFolderError, also a ValueError
    with pytest.raises(ValueError, match="SHA-256"):
        load_enhancer(copy_of)
    with pytest.raises(FileNotFoundError, match="not an exported model"):
        load_enhancer(tmp_path)


def test_corrupt_checkpoint_detected_by_checksum(copy_of):
    path = copy_of / SCORE_CKPT
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match="score_model.ckpt is corrupt"):
        DiffusionEnhancement.from_hparams(source=copy_of)


def test_truncated_checkpoint_named_without_checksums(copy_of):
    path = copy_of / SCORE_CKPT
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="score_model.ckpt is corrupt"):
        DiffusionEnhancement.from_hparams(
            source=copy_of, verify_checksums=False
        )


def test_mismatched_checkpoint_named(copy_of):
    # a refiner checkpoint that does not fit the refiner of the YAML
    torch.save({"weight": torch.zeros(3)}, copy_of / REFINER_CKPT)
    with pytest.raises(ModelFolderError, match="refiner.ckpt does not match"):
        DiffusionEnhancement.from_hparams(
            source=copy_of, verify_checksums=False
        )


def test_corrupt_hyperparams_named(copy_of):
    path = copy_of / HPARAMS_FILE
    path.write_text(path.read_text().replace("!new:", "!nwe:", 1))
    with pytest.raises(ModelFolderError, match=HPARAMS_FILE):
        DiffusionEnhancement.from_hparams(source=copy_of)


def test_reexport_replaces_atomically(tmp_path, lobe):
    sde, transform, sampler = components()
    folder = tmp_path / "model"
    backbone = lobe("tiny", "score_model")
    refiner = lobe("refiner_tiny", "refiner")
    export_enhancer(folder, backbone, sde, transform, sampler, refiner)
    assert (folder / REFINER_CKPT).exists()
    # stage 1 alone over a two-stage export: the old refiner must go
    export_enhancer(folder, backbone, sde, transform, Sampler("pc", 3))
    assert not (folder / REFINER_CKPT).exists()
    enhancer = DiffusionEnhancement.from_hparams(source=folder)
    assert not enhancer.has_refiner
    assert enhancer.default_sampler.steps == 3
    # a failing export leaves the previous one untouched, and no litter
    broken = lobe("tiny", "score_model")
    broken.config = dict(broken.config, nf=object())
    before = (folder / HPARAMS_FILE).read_text()
    with pytest.raises(ValueError, match="nf"):
        export_enhancer(folder, broken, sde, transform, sampler)
    assert (folder / HPARAMS_FILE).read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_refuses_foreign_folder_and_bad_modules(tmp_path, lobe):
    sde, transform, sampler = components()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an exported model"):
        export_enhancer(
            foreign, lobe("tiny", "score_model"), sde, transform, sampler
        )
    assert (foreign / "notes.txt").read_text() == "keep me"

    class Local(torch.nn.Module):
        frame_multiple = 1
        config = {}

    with pytest.raises(ValueError, match="imported from a module"):
        export_enhancer(tmp_path / "x", Local(), sde, transform, sampler)
    no_config = torch.nn.Conv2d(4, 2, 1)
    no_config.frame_multiple = 1
    with pytest.raises(ValueError, match="config"):
        export_enhancer(tmp_path / "y", no_config, sde, transform, sampler)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_module_from_yaml(tmp_path):
    path = tmp_path / "linear.yaml"
    path.write_text(
        "size: 3\n"
        "net: !new:torch.nn.Linear\n"
        "    in_features: !ref <size>\n"
        "    out_features: 2\n"
    )
    net = module_from_yaml(path, "net")
    assert isinstance(net, torch.nn.Linear) and net.in_features == 3
    assert net.config == {"size": 3}  # the file's other top-level keys
    with pytest.raises(
        KeyError, match=r"defines no 'model'.*\['net', 'size'\]"
    ):
        module_from_yaml(path, "model")


def test_float16_weights_halve_the_files_and_load_as_float32(
    two_stage, tmp_path
):
    folder, backbone, refiner = two_stage
    sde, transform, sampler = components()
    half = export_enhancer(
        tmp_path / "half",
        backbone,
        sde,
        transform,
        sampler,
        refiner=refiner,
        weights_dtype="float16",
    )
    for name in ("score_model.ckpt", "refiner.ckpt"):
        ratio = (half / name).stat().st_size / (folder / name).stat().st_size
        assert 0.45 < ratio < 0.6, (name, ratio)
        stored = torch.load(half / name, weights_only=True)
        assert {v.dtype for v in stored.values() if v.is_floating_point()} == {
            torch.float16
        }
    card = json.loads((half / "model_card.json").read_text())
    assert card["weights_dtype"] == "float16"
    enhancer = DiffusionEnhancement.from_hparams(
        source=half, run_opts={"device": "cpu"}
    )
    for original, loaded in (
        (backbone, enhancer.mods.score_model),
        (refiner, enhancer.mods.refiner),
    ):
        for key, want in original.state_dict().items():
            got = loaded.state_dict()[key]
            assert got.dtype == want.dtype, key
            assert torch.equal(got, want.half().to(want.dtype)), key
    with pytest.raises(ValueError, match="weights_dtype must be one of"):
        export_enhancer(
            tmp_path / "bad",
            backbone,
            sde,
            transform,
            sampler,
            weights_dtype="int8",
        )
