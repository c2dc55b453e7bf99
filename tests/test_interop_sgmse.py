"""Importing sgmse checkpoints, checked against the real sgmse 0.1.2.

The fixtures in tests/fixtures/sgmse were written by sgmse's own classes
(``tools/make_sgmse_fixtures.py`` in a separate virtual environment, see
docs/interop.md); these tests need neither sgmse nor that environment.
"""

import json
import os
import pathlib
import sys

import pytest
import torch

from speechbrain_elbo import sampling
from speechbrain_elbo import sde as sde_module
from speechbrain_elbo.export import file_sha256
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.interop.checkpoint import (
    CheckpointError,
    InertReference,
    read_checkpoint,
)
from speechbrain_elbo.interop.sgmse import import_sgmse, main
from speechbrain_elbo.interop.sgmse_network import SGMSENCSNpp
from speechbrain_elbo.losses import SigmaSquaredLoss
from speechbrain_elbo.pipeline import enhance_spectrogram, frame_multiple_of
from speechbrain_elbo.score import ScoreModel

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "sgmse"
CKPT = FIXTURES / "ncsnpp_small.ckpt"  # for the reading and refusal tests
TOL = 1e-4  # relative, max |ours - sgmse| / max |sgmse|

pytestmark = pytest.mark.usefixtures("one_thread")


def rel_error(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


NAMES = ["ncsnpp_small", "ncsnpp_48k_small"]


@pytest.fixture(scope="module", params=NAMES)
def case(request, tmp_path_factory):
    """One fixture model: sgmse's reference outputs and our imports of it.

    ``case["ema"]`` / ``case["raw"]``: the checkpoint imported with the EMA
    weights (default) and with ``--no-ema``, loaded with from_hparams.
    """
    name = request.param
    root = tmp_path_factory.mktemp(name)
    ckpt = FIXTURES / f"{name}.ckpt"
    assert main([str(ckpt), "--out", str(root / "ema")]) == 0
    assert main([str(ckpt), "--out", str(root / "raw"), "--no-ema"]) == 0
    loaded = {
        kind: DiffusionEnhancement.from_hparams(
            source=root / kind, run_opts={"device": "cpu"}
        )
        for kind in ("ema", "raw")
    }
    ref = torch.load(FIXTURES / f"{name}_reference.pt", weights_only=True)
    return {"name": name, "ckpt": ckpt, "ref": ref, "folder": root, **loaded}


class Replay:
    """Stands in for complex_noise: hands out sgmse's recorded draws."""

    def __init__(self, draws):
        self.draws = list(draws)

    def __call__(self, like, generator=None):
        z = self.draws.pop(0)
        assert z.shape == like.shape
        return z.to(like.device)


@pytest.fixture
def replay(monkeypatch):
    """Install a Replay of the given draws in the sampler and the SDE."""

    def install(draws):
        noise = Replay(draws)
        monkeypatch.setattr(sampling, "complex_noise", noise)
        monkeypatch.setattr(sde_module, "complex_noise", noise)
        return noise

    return install


# -- safe reading ---------------------------------------------------------
def test_real_checkpoint_reads_with_inert_data_module():
    checkpoint = read_checkpoint(CKPT)
    cls = checkpoint["hyper_parameters"]["data_module_cls"]
    assert issubclass(cls, InertReference)
    assert cls.qualified_name == "sgmse.data_module.SpecsDataModule"
    with pytest.raises(CheckpointError, match="cannot be instantiated"):
        cls()
    assert "sgmse" not in {m.split(".")[0] for m in list(sys.modules)}


class _Exploit:
    """Pickles as a call of os.system that would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_global_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = read_checkpoint(CKPT)
    checkpoint["hyper_parameters"]["data_module_cls"] = _Exploit(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"global posix\.system"):
        read_checkpoint(path)
    assert not marker.exists()
    assert main([str(path), "--out", str(tmp_path / "out")]) == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["truncated", "text", "missing", "list"])
def test_unreadable_files_are_refused(tmp_path, kind, capsys):
    path = tmp_path / "bad.ckpt"
    if kind == "truncated":
        path.write_bytes(CKPT.read_bytes()[:4096])
    elif kind == "text":
        path.write_text("not a checkpoint")
    elif kind == "list":
        torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("speechbrain-elbo-import: error:")
    assert len(err.splitlines()) == 1


# -- what is refused --------------------------------------------------------
def _edited(tmp_path, edit):
    """The fixture checkpoint with ``edit(checkpoint)`` applied, saved."""
    checkpoint = read_checkpoint(CKPT)
    checkpoint["hyper_parameters"]["data_module_cls"] = "SpecsDataModule"
    edit(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


def _set_hparam(key, value):
    return lambda c: c["hyper_parameters"].__setitem__(key, value)


def _extra_tensor(c):
    c["state_dict"]["dnn.extra.weight"] = torch.zeros(3)
    c["ema"]["shadow_params"].append(torch.zeros(3))


def _drop_tensor(c):
    key = "dnn.all_modules.5.Conv_0.weight"
    c["ema"]["shadow_params"].pop(list(c["state_dict"]).index(key))
    del c["state_dict"][key]


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set_hparam("backbone", "dcunet"), "backbone 'dcunet' is not supp"),
        (_set_hparam("backbone", "ncsnpp_v2"), "backbone 'ncsnpp_v2' is not"),
        (_set_hparam("sde", "sbve"), "SDE 'sbve' is not supported"),
        (_set_hparam("sde", "bbed"), "SDE 'bbed' is not supported"),
        (_set_hparam("mystery", 1), r"unknown hyper-parameter\(s\) \['myst"),
        (_set_hparam("window", "sqrthann"), "window='sqrthann' is not sup"),
        (_set_hparam("centered", False), "centered=False is not supported"),
        (_set_hparam("transform_type", "log"), "transform_type 'log' is not"),
        (_set_hparam("sampler_type", "ode"), "sampler_type='ode' is not"),
        (_set_hparam("nf", 16), "has shape .* expected"),
        (_extra_tensor, r"not used .*dnn\.extra\.weight"),
        (_drop_tensor, r"lacks the tensor dnn\.all_modules\.5\.Conv_0"),
        (lambda c: c.pop("ema"), "no EMA weights"),
        (
            lambda c: c["ema"]["shadow_params"].pop(),
            "the EMA holds 290 tensors but the backbone has 291",
        ),
        (
            lambda c: c["state_dict"].__setitem__("pesq_loss.w", torch.ones(1)),
            r"outside the backbone \(\['pesq_loss\.w'\]\)",
        ),
    ],
)
def test_unsupported_checkpoints_fail_clearly(tmp_path, edit, message, capsys):
    path = _edited(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        import_sgmse(path, tmp_path / "out")
    assert main([str(path), "--out", str(tmp_path / "out")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_sampler_defaults_can_be_set_at_import(tmp_path):
    folder = tmp_path / "reverb"
    args = ["--steps", "50", "--snr", "0.33", "--corrector-steps", "2"]
    assert main([str(CKPT), "--out", str(folder), *args]) == 0
    enhancer = DiffusionEnhancement.from_hparams(source=folder)
    sampler = enhancer.default_sampler
    assert (sampler.name, sampler.steps, sampler.snr) == ("pc", 50, 0.33)
    assert sampler.corrector_steps == 2


def test_ignore_key_accepts_and_records_an_unknown_key(tmp_path):
    path = _edited(tmp_path, _set_hparam("mystery", 1))
    folder = import_sgmse(path, tmp_path / "out", ignore_keys=["mystery"])
    card = json.loads((folder / "model_card.json").read_text())
    assert card["model_card"]["training_only_settings"]["mystery"] == 1


# -- the imported folder ---------------------------------------------------
def test_imported_folder_records_source_and_settings(case):
    card = json.loads((case["folder"] / "ema" / "model_card.json").read_text())
    card = card["model_card"]
    assert card["source"]["sha256"] == file_sha256(case["ckpt"])
    assert card["source"]["weights"].startswith("EMA")
    raw_card = json.loads(
        (case["folder"] / "raw" / "model_card.json").read_text()
    )
    assert raw_card["model_card"]["source"]["weights"] == "raw (--no-ema)"
    hparams = read_checkpoint(case["ckpt"])["hyper_parameters"]
    recorded = {**card["settings_read"], **card["training_only_settings"]}
    assert set(recorded) == set(hparams)
    assert recorded["data_module_cls"] == "sgmse.data_module.SpecsDataModule"
    enhancer = case["ema"]
    assert enhancer.sample_rate == hparams["sr"]
    assert enhancer.sde.gamma == hparams["theta"]
    assert enhancer.sde.t_eps == hparams["t_eps"]
    assert enhancer.sde.gns.sigma_max == hparams["sigma_max"]
    assert enhancer.transform.n_fft == hparams["n_fft"]
    assert enhancer.transform.beta == hparams["spec_factor"]
    assert enhancer.default_sampler.steps == hparams["N"]
    backbone = enhancer.mods.score_model
    assert isinstance(backbone, SGMSENCSNpp)
    assert backbone.frame_multiple == 64
    expected = {"ncsnpp": "sgmse_time", "ncsnpp_48k": "sgmse_time_output"}
    assert backbone.score_parameterisation == expected[hparams["backbone"]]


# -- equivalence with sgmse 0.1.2 -------------------------------------------
def test_spectral_transform_matches(case):
    ref, transform = case["ref"], case["ema"].transform
    Y = transform.encode(ref["noisy"] / ref["norm_factor"])
    assert rel_error(Y, ref["Y"]) < TOL
    back = transform.decode(ref["Y"], ref["noisy"].shape[-1])
    assert rel_error(back, ref["Y_back"]) < TOL


@pytest.mark.parametrize("weights", ["ema", "raw"])
def test_score_matches(case, weights):
    ref, model = case["ref"], case[weights].score_model
    with torch.no_grad():
        score = model(ref["net_x_t"], ref["net_y"], ref["net_t"])
    assert rel_error(score, ref[f"score_{weights}"]) < TOL
    other = "raw" if weights == "ema" else "ema"
    assert rel_error(score, ref[f"score_{other}"]) > 100 * TOL


def test_predictor_step_matches(case, replay):
    ref, enhancer = case["ref"], case["ema"]
    noise = replay([ref["pred_noise"]])
    t = ref["pred_t"][0]
    with torch.no_grad():
        x, mean = sampling.reverse_diffusion_step(
            enhancer.score_model,
            enhancer.sde,
            ref["net_x_t"],
            ref["net_y"],
            t,
            t - ref["pred_stepsize"],
            None,
        )
    assert not noise.draws
    assert rel_error(x, ref["pred_x"]) < TOL
    assert rel_error(mean, ref["pred_mean"]) < TOL


def test_corrector_step_matches(case, replay):
    ref, enhancer = case["ref"], case["ema"]
    replay([ref["corr_noise"]])
    with torch.no_grad():
        x = sampling.langevin_step(
            enhancer.score_model,
            enhancer.sde,
            ref["net_x_t"],
            ref["net_y"],
            ref["pred_t"][0],
            ref["snr"],
            None,
        )
    assert rel_error(x, ref["corr_x"]) < TOL


def _enhance(case, replay, tag=""):
    """Our whole enhancement of ref[f"noisy{tag}"], with sgmse's noise."""
    ref = case["ref"]
    noise = replay(ref[f"enh{tag}_noise"])
    out = case["ema"].enhance_batch(
        ref[f"noisy{tag}"], sampler="pc", steps=ref["N"], return_nfe=True
    )
    assert not noise.draws  # as many draws as sgmse, in the same shapes
    assert out[1] == ref[f"enh{tag}_nfe"]
    return out[0]


def test_enhanced_waveform_matches_without_padding(case, replay):
    """An input of exactly 64 frames: no padding, the whole chain equal."""
    ref = case["ref"]
    enhancer = case["ema"]
    frames = enhancer.transform.num_frames(ref["noisy64"].shape[-1])
    assert frames == 64
    ours = _enhance(case, replay, "64")
    assert rel_error(ours, ref["enhanced64"]) < TOL


def test_enhanced_spectrogram_matches_with_padding(case, replay):
    ref, enhancer = case["ref"], case["ema"]
    noise = replay(ref["enh_noise"])
    y = enhancer.transform.encode(ref["noisy"] / ref["norm_factor"])
    out = enhance_spectrogram(
        enhancer.score_model,
        enhancer.sde,
        y,
        enhancer.default_sampler,
        frame_multiple=frame_multiple_of(enhancer.mods.score_model),
    )
    assert not noise.draws
    frames = y.shape[-1]
    assert frames % 64  # the case with padding frames
    assert rel_error(out.stage1, ref["enh_sample"][..., :frames]) < TOL


def test_enhanced_waveform_matches_before_the_padding(case, replay):
    ref, transform = case["ref"], case["ema"].transform
    ours = _enhance(case, replay)
    # samples that the frames past the input's own do not reach
    frames = transform.num_frames(ref["noisy"].shape[-1])
    end = frames * transform.hop_length - transform.n_fft // 2
    assert end > 0.9 * ours.shape[-1]
    assert rel_error(ours[..., :end], ref["enhanced"][..., :end]) < TOL


def test_enhanced_waveform_matches_with_padding(case, replay):
    ours = _enhance(case, replay)
    assert rel_error(ours, case["ref"]["enhanced"]) < TOL


def test_training_loss_matches_up_to_the_stated_constant(case, monkeypatch):
    """SigmaSquaredLoss averages over bins; sgmse sums over the C F T bins
    of an example, halves, and averages over the batch (docs/interop.md)."""
    ref, enhancer = case["ref"], case["ema"]
    sde = enhancer.sde
    monkeypatch.setattr(sde, "sample_time", lambda *a, **k: ref["loss_t"])
    monkeypatch.setattr(sde_module, "complex_noise", Replay([ref["loss_z"]]))
    with torch.no_grad():
        ours = SigmaSquaredLoss(sde)(
            enhancer.score_model, ref["loss_x0"], ref["loss_y"]
        )
    bins = ref["loss_x0"][0].numel()
    assert abs(0.5 * bins * ours - ref["loss"]) < TOL * ref["loss"]


# -- the score parameterisation --------------------------------------------
@pytest.mark.parametrize("divide_by_t", ["features", "output"])
def test_sgmse_time_parameterisations(divide_by_t):
    net = SGMSENCSNpp(
        nf=8,
        ch_mult=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[],
        num_freqs=64,
        divide_by_t=divide_by_t,
    ).eval()
    model = ScoreModel(net, imported_sde())
    x = torch.randn(2, 1, 64, 5, dtype=torch.complex64)
    y = torch.randn(2, 1, 64, 5, dtype=torch.complex64)
    t = torch.tensor([0.2, 0.7])
    inputs = torch.cat([x.real, x.imag, y.real, y.imag], 1)
    with torch.no_grad():
        if divide_by_t == "features":
            raw = net(inputs, t.log(), feature_divisor=t)
        else:
            raw = net(inputs, t.log()) / t.reshape(-1, 1, 1, 1)
        score = model(x, y, t)
        assert torch.allclose(score, -torch.complex(raw[:, :1], raw[:, 1:]))
        sigma = model.sde.std(t).reshape(-1, 1, 1, 1)
        assert torch.allclose(model.predict_noise(x, y, t), -sigma * score)
    with pytest.raises(ValueError, match="divide_by_t must be"):
        SGMSENCSNpp(nf=8, ch_mult=[1, 2], divide_by_t="input")


def imported_sde():
    from speechbrain_elbo.sde import OUVESDE, GeometricGNS

    return OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)


def test_a_recipe_refuses_a_stage1_of_another_sample_rate(tmp_path):
    from speechbrain_elbo.recipe import load_stage1

    folder = tmp_path / "sgmse48k"
    import_sgmse(FIXTURES / "ncsnpp_48k_small.ckpt", folder)
    hparams = {
        "stage1_folder": str(folder),
        "sample_rate": 16000,
        "stage1_steps": None,
    }
    with pytest.raises(ValueError, match="--sample_rate=48000"):
        load_stage1(hparams, {"device": "cpu"})
    hparams["sample_rate"] = 48000
    assert load_stage1(hparams, {"device": "cpu"}).sample_rate == 48000
