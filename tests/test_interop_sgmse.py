"""Importing sgmse checkpoints, checked against the real sgmse 0.1.2.

The fixtures in tests/fixtures/sgmse were written by sgmse's own classes
(``tools/make_sgmse_fixtures.py`` in a separate virtual environment, see
docs/interop.md); these tests need neither sgmse nor that environment.
"""

import json
import os
import pathlib
import re
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
from speechbrain_elbo.interop.sgmse_hparams import equivalent_loss
from speechbrain_elbo.interop.sgmse_network import SGMSENCSNpp, SGMSENCSNppV2
from speechbrain_elbo.losses import make_loss
from speechbrain_elbo.pipeline import enhance_spectrogram, frame_multiple_of
from speechbrain_elbo.score import ScoreModel

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "sgmse"
CKPT = FIXTURES / "ncsnpp_small.ckpt"  # for the reading and refusal tests
TOL = 1e-4  # relative, max |ours - sgmse| / max |sgmse|

pytestmark = pytest.mark.usefixtures("one_thread")


def rel_error(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max())


NAMES = ["ncsnpp_small", "ncsnpp_48k_small", "ncsnpp_v2_small"]
V2_CKPT = FIXTURES / "ncsnpp_v2_small.ckpt"


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
def _edited(tmp_path, edit, source=CKPT):
    """The fixture checkpoint with ``edit(checkpoint)`` applied, saved."""
    checkpoint = read_checkpoint(source)
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
        (_set_hparam("backbone", "ncsnpp_v3"), "backbone 'ncsnpp_v3' is not"),
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


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("c_in", "2", r"ncsnpp_v2 setting c_in='2' is not supported"),
        ("c_out", "edm2", r"c_out='edm2' is not supported \(reproduced"),
        ("c_skip", "1", r"c_skip='1' is not supported"),
        ("network_scaling", "1/x", r"network_scaling='1/x' is not supp"),
        ("loss_type", "data_prediction", r"loss_type='data_prediction'"),
        ("sigma_data", 0.0, r"sigma_data must be > 0"),
    ],
)
def test_unsupported_ncsnpp_v2_settings_fail_clearly(
    tmp_path, key, value, message, capsys
):
    path = _edited(tmp_path, _set_hparam(key, value), V2_CKPT)
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
    expected = {
        "ncsnpp": ("sgmse_time", "zeros"),
        "ncsnpp_48k": ("sgmse_time_output", "reflection"),
        "ncsnpp_v2": ("sgmse_v2", "reflection"),
    }[hparams["backbone"]]
    assert backbone.score_parameterisation == expected[0]
    assert backbone.frame_padding == expected[1]
    assert backbone.decode_padded  # as sgmse's enhancement.py
    assert card["training_loss"]["equivalent"] == "sigma2"
    if hparams["backbone"] == "ncsnpp_v2":
        assert isinstance(backbone, SGMSENCSNppV2)
        for key in ("c_in", "c_out", "c_skip", "network_scaling"):
            assert backbone.preconditioning[key] == hparams[key]
            assert card["settings_read"][key] == hparams[key]
        assert card["preconditioning"]["sigma_data"] == hparams["sigma_data"]


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
    name, factor = equivalent_loss(
        read_checkpoint(case["ckpt"])["hyper_parameters"]
    )
    monkeypatch.setattr(sde, "sample_time", lambda *a, **k: ref["loss_t"])
    monkeypatch.setattr(sde_module, "complex_noise", Replay([ref["loss_z"]]))
    with torch.no_grad():
        ours = make_loss(name, sde)(
            enhancer.score_model, ref["loss_x0"], ref["loss_y"]
        )
    bins = ref["loss_x0"][0].numel()
    assert abs(factor * bins * ours - ref["loss"]) < TOL * ref["loss"]


@pytest.mark.parametrize("loss_type", ["denoiser", "data_prediction"])
def test_a_loss_without_equivalent_is_refused_and_recorded(tmp_path, loss_type):
    hparams = {"loss_type": loss_type, "loss_weighting": "sigma^2"}
    with pytest.raises(CheckpointError, match=f"loss_type='{loss_type}'.*no"):
        equivalent_loss(hparams)
    if loss_type == "denoiser":  # still imported, for enhancement
        path = _edited(tmp_path, _set_hparam("loss_type", loss_type), V2_CKPT)
        folder = import_sgmse(path, tmp_path / "out")
        card = json.loads((folder / "model_card.json").read_text())
        loss = card["model_card"]["training_loss"]
        assert loss["equivalent"] is None
        assert "no equivalent" in loss["why"]


# -- ncsnpp_v2: every scaling setting against sgmse -------------------------
def _v2_variants():
    ref = torch.load(
        FIXTURES / "ncsnpp_v2_small_reference.pt", weights_only=True
    )
    return ref, ref["variants"]


@pytest.mark.parametrize("variant", sorted(_v2_variants()[1]))
def test_ncsnpp_v2_scalings_match(tmp_path, variant):
    """The same weights and inputs under other c_in / c_out / c_skip /
    network_scaling / loss_type settings: the score is sgmse's."""
    ref, variants = _v2_variants()
    settings = {k: v for k, v in variants[variant].items() if k != "score"}

    def edit(checkpoint):
        checkpoint["hyper_parameters"].update(settings)

    folder = import_sgmse(_edited(tmp_path, edit, V2_CKPT), tmp_path / "m")
    model = DiffusionEnhancement.from_hparams(source=folder).score_model
    with torch.no_grad():
        score = model(ref["net_x_t"], ref["net_y"], ref["net_t"])
    theirs = variants[variant]["score"]
    assert rel_error(score, theirs) < TOL
    # the setting matters: the base model's score is another one
    assert rel_error(ref["score_ema"], theirs) > 100 * TOL


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


# -- checkpoint folders of SpeechBrain's SGMSE recipe ----------------------
class _SavedScoreModel(torch.nn.Module):
    """Stands for the recipe's ScoreModel when SpeechBrain saves it.

    ``speechbrain.integrations.models.sgmse_plus.ScoreModel`` keeps the
    sgmse backbone as ``self.dnn`` (its EMA and SDE are no modules), so its
    state_dict is the one of the sgmse Lightning ScoreModel, which keeps it
    as ``self.dnn`` too: the fixture's ``state_dict``, same keys, same order.
    """

    def __init__(self, state):
        super().__init__()
        self.saved = state

    def state_dict(self, *args, **kwargs):
        return self.saved


class _EMA:
    """torch_ema's ExponentialMovingAverage as the recipe saves it."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state


#: The model's arguments in the recipe's hparams.yaml (modules:
#: score_model: !new:...sgmse_plus.ScoreModel): the fixture's values.
_MODEL_KEYS = (
    "backbone sde theta sigma_min sigma_max lr ema_decay t_eps "
    "num_eval_files loss_type loss_weighting network_scaling c_in c_out "
    "c_skip sigma_data l1_weight pesq_weight nf ch_mult num_res_blocks "
    "attn_resolutions image_size"
).split()


def _recipe_yaml(hparams, **top):
    """A hparams.yaml laid out as the recipe's, with the fixture's values."""
    top = {
        "sample_rate": hparams["sr"],
        "n_fft": hparams["n_fft"],
        "hop_length": hparams["hop_length"],
        "window_type": hparams["window"],
        "transform_type": hparams["transform_type"],
        "spec_factor": hparams["spec_factor"],
        "spec_abs_exponent": hparams["spec_abs_exponent"],
        **top,
    }
    lines = [
        "output_folder: results",
        'run_name: "RUN_NAME"',
        "save_dir: !ref <output_folder>/<run_name>/checkpoints",
        "data_dir: !PLACEHOLDER",
        "train_annotation: !ref <data_dir>/train.json",
        "segment_frames: 256",
        "normalize: noisy",
        "batch_size: 8",
        "number_of_epochs: 2",
        "lr: 0.0001",
    ]
    lines += [f"{k}: {json.dumps(v)}" for k, v in top.items()]
    lines += [
        "sampling:",
        "  sampler_type: pc",
        "  predictor: reverse_diffusion",
        "  corrector: ald",
        f"  N: {hparams['N'] + 2}",
        "  corrector_steps: 1",
        "  snr: 0.4",
        "epoch_counter: !new:speechbrain.utils.epoch_loop.EpochCounter",
        "  limit: !ref <number_of_epochs>",
        "modules:",
        "  score_model: !new:speechbrain.integrations.models.sgmse_plus."
        "ScoreModel",
    ]
    lines += [
        f"    {k}: {json.dumps(hparams[k])}"
        for k in _MODEL_KEYS
        if k in hparams
    ]
    lines += [
        "    N: !ref <sampling[N]>",
        "    corrector_steps: !ref <sampling[corrector_steps]>",
        "    sampler_type: !ref <sampling[sampler_type]>",
        "    snr: !ref <sampling[snr]>",
        "    sr: !ref <sample_rate>",
        "opt_class: !name:torch.optim.Adam",
        "  lr: !ref <lr>",
        "checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer",
        "  checkpoints_dir: !ref <save_dir>",
        "  recoverables:",
        "    score_model: !ref <modules[score_model]>",
        "    counter: !ref <epoch_counter>",
    ]
    return "\n".join(lines) + "\n"


def _speechbrain_run(root, ckpt=V2_CKPT, edit=None, **top):
    """A run folder of the recipe made from an sgmse fixture checkpoint.

    ``hyperparams.yaml`` as the recipe saves it (hyperpyyaml's
    resolve_references, as sb.create_experiment_directory does), and one
    ``CKPT+...`` folder written by SpeechBrain's own Checkpointer with the
    recipe's recoverables: score_model (state_dict), ema (torch_ema's
    state_dict, the recipe's custom hook), counter, optimizer.
    Returns (run folder, CKPT folder, the checkpoint's hyper_parameters).
    """
    from hyperpyyaml import resolve_references
    from speechbrain.utils.checkpoints import Checkpointer
    from speechbrain.utils.epoch_loop import EpochCounter

    checkpoint = read_checkpoint(ckpt)
    if edit is not None:
        edit(checkpoint)
    hparams = checkpoint["hyper_parameters"]
    run = root / "run"
    run.mkdir(parents=True)
    text = _recipe_yaml(hparams, **top)
    (run / "recipe_hparams.yaml").write_text(text)
    resolved = resolve_references(text, {"data_dir": "/data", "run_name": "r"})
    (run / "hyperparams.yaml").write_text(
        "# Generated 2025-11-30 from:\n# yamllint disable\n"
        + resolved.getvalue()
    )
    checkpointer = Checkpointer(run / "checkpoints")
    checkpointer.add_recoverable(
        "score_model", _SavedScoreModel(checkpoint["state_dict"])
    )
    checkpointer.add_recoverable("counter", EpochCounter(2))
    checkpointer.add_recoverable(
        "ema",
        _EMA(checkpoint["ema"]),
        custom_save_hook=lambda obj, path: torch.save(obj.state_dict(), path),
        custom_load_hook=lambda obj, path, end: None,
    )
    param = torch.nn.Parameter(torch.zeros(2))
    checkpointer.add_recoverable("optimizer", torch.optim.Adam([param]))
    saved = checkpointer.save_checkpoint(meta={"valid_loss": 1.5})
    return run, pathlib.Path(saved.path), hparams


@pytest.fixture(scope="module")
def sb_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb")
    run, ckpt_dir, hparams = _speechbrain_run(root)
    assert main([str(ckpt_dir), "--out", str(root / "ema")]) == 0
    assert main([str(ckpt_dir), "--out", str(root / "raw"), "--no-ema"]) == 0
    assert main([str(V2_CKPT), "--out", str(root / "sgmse")]) == 0
    return {"root": root, "run": run, "ckpt": ckpt_dir, "hparams": hparams}


def test_speechbrain_folder_has_the_recipe_layout(sb_run):
    names = sorted(p.name for p in sb_run["ckpt"].iterdir())
    assert sb_run["ckpt"].name.startswith("CKPT+")
    assert names == [
        "CKPT.yaml",
        "counter.ckpt",
        "ema.ckpt",
        "optimizer.ckpt",
        "score_model.ckpt",
    ]
    state = torch.load(sb_run["ckpt"] / "score_model.ckpt", weights_only=True)
    assert next(iter(state)).startswith("dnn.")
    text = (sb_run["run"] / "hyperparams.yaml").read_text()
    assert "score_model: &id" in text and "score_model: *id" in text


def test_speechbrain_folder_imports_the_same_network(sb_run):
    """Same weights, same score as the sgmse .ckpt's import (and sgmse's)."""
    ref = torch.load(
        FIXTURES / "ncsnpp_v2_small_reference.pt", weights_only=True
    )
    inputs = (ref["net_x_t"], ref["net_y"], ref["net_t"])
    loaded = {
        kind: DiffusionEnhancement.from_hparams(source=sb_run["root"] / kind)
        for kind in ("ema", "raw", "sgmse")
    }
    with torch.no_grad():
        scores = {k: e.score_model(*inputs) for k, e in loaded.items()}
    assert torch.equal(scores["ema"], scores["sgmse"])
    assert rel_error(scores["ema"], ref["score_ema"]) < TOL
    assert rel_error(scores["raw"], ref["score_raw"]) < TOL
    ours = loaded["ema"].mods.score_model.state_dict()
    theirs = loaded["sgmse"].mods.score_model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    backbone = loaded["ema"].mods.score_model
    assert backbone.frame_padding == "reflection"
    assert not backbone.decode_padded  # the recipe crops, then decodes


def test_speechbrain_folder_enhances_as_the_recipe(sb_run, replay):
    """Reflection padding, sample, frames cropped, then the inverse STFT:
    the recipe's Brain.enhance, on the sample sgmse drew."""
    ref = torch.load(
        FIXTURES / "ncsnpp_v2_small_reference.pt", weights_only=True
    )
    enhancer = DiffusionEnhancement.from_hparams(source=sb_run["root"] / "ema")
    noise = replay(ref["enh_noise"])
    ours = enhancer.enhance_batch(
        ref["noisy"], sampler="pc", steps=ref["N"], snr=ref["snr"]
    )
    assert not noise.draws
    assert rel_error(ours, ref["enhanced_sb"]) < TOL
    # decoding before cropping (sgmse's enhancement.py) differs at the end
    assert rel_error(ref["enhanced"], ref["enhanced_sb"]) > 100 * TOL


def test_speechbrain_folder_card_and_sampler(sb_run):
    folder = sb_run["root"] / "ema"
    card = json.loads((folder / "model_card.json").read_text())["model_card"]
    source = card["source"]
    files = {f["file"]: f["sha256"] for f in source["files"]}
    ckpt, run = sb_run["ckpt"], sb_run["run"]
    assert files == {
        "score_model.ckpt": file_sha256(ckpt / "score_model.ckpt"),
        "ema.ckpt": file_sha256(ckpt / "ema.ckpt"),
        "CKPT.yaml": file_sha256(ckpt / "CKPT.yaml"),
        "hyperparams.yaml": file_sha256(run / "hyperparams.yaml"),
    }
    assert source["weights"].startswith("EMA")
    assert source["checkpoint_meta"]["valid_loss"] == 1.5
    assert card["not_imported"]["files"] == ["counter.ckpt", "optimizer.ckpt"]
    assert card["settings_read"]["network_scaling"] == "1/sigma"
    assert card["source"]["recipe"]["model_arguments_not_used"] == {
        "corrector_steps": 1,
        "snr": 0.4,
    }
    sampler = DiffusionEnhancement.from_hparams(source=folder).default_sampler
    hparams = sb_run["hparams"]
    assert (sampler.steps, sampler.snr) == (hparams["N"] + 2, 0.4)
    raw = json.loads((sb_run["root"] / "raw" / "model_card.json").read_text())
    raw_files = {f["file"] for f in raw["model_card"]["source"]["files"]}
    assert "ema.ckpt" not in raw_files


def test_speechbrain_folder_with_the_unresolved_recipe_yaml(sb_run, tmp_path):
    """--hparams: the recipe's own hparams.yaml (!ref not yet resolved)."""
    args = [str(sb_run["ckpt"]), "--out", str(tmp_path / "m")]
    args += ["--hparams", str(sb_run["run"] / "recipe_hparams.yaml")]
    assert main(args) == 0
    with torch.no_grad():
        ref = torch.load(
            FIXTURES / "ncsnpp_v2_small_reference.pt", weights_only=True
        )
        model = DiffusionEnhancement.from_hparams(source=tmp_path / "m")
        score = model.score_model(ref["net_x_t"], ref["net_y"], ref["net_t"])
    assert rel_error(score, ref["score_ema"]) < TOL


def _without(name):
    def remove(run, ckpt):
        (run if name == "hyperparams.yaml" else ckpt).joinpath(name).unlink()

    return remove


def _extra_sb_tensor(run, ckpt):
    state = torch.load(ckpt / "score_model.ckpt", weights_only=True)
    state["dnn.extra.weight"] = torch.zeros(3)
    torch.save(state, ckpt / "score_model.ckpt")
    ema = torch.load(ckpt / "ema.ckpt", weights_only=True)
    ema["shadow_params"].append(torch.zeros(3))
    torch.save(ema, ckpt / "ema.ckpt")


def _evil_yaml(run, ckpt):
    marker = run / "pwned"
    text = (run / "hyperparams.yaml").read_text()
    text += f"hook: !!python/object/apply:os.system ['touch {marker}']\n"
    (run / "hyperparams.yaml").write_text(text)


def _evil_pickle(run, ckpt):
    torch.save({"x": _Exploit(run / "pwned")}, ckpt / "score_model.ckpt")


def _yaml_edit(old, new):
    def edit(run, ckpt):
        path = run / "hyperparams.yaml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    return edit


@pytest.mark.parametrize(
    "break_it, message",
    [
        (_without("hyperparams.yaml"), "hyperparams.yaml .* does not exist"),
        (_without("CKPT.yaml"), "holds no CKPT.yaml"),
        (_without("ema.ckpt"), "has no ema.ckpt .* --no-ema"),
        (_without("score_model.ckpt"), "score_model.ckpt does not exist"),
        (_extra_sb_tensor, r"not used .*dnn\.extra\.weight"),
        (_evil_yaml, "YAML cannot be read"),
        (_evil_pickle, r"pickles the global posix\.system"),
        (_yaml_edit("corrector: ald", "corrector: langevin"), "corrector="),
        (_yaml_edit("sample_rate: 16000", "sample_rate: 8000"), "differs"),
        (_yaml_edit("c_in: edm", "c_in: '2'"), "c_in='2' is not supported"),
        (_yaml_edit("sde: ouve", "sde: sbve"), "SDE 'sbve' is not supp"),
        (_yaml_edit("ScoreModel", "Other"), "defines 0 modules of class"),
    ],
)
def test_broken_speechbrain_folders_fail_clearly(
    tmp_path, break_it, message, capsys
):
    run, ckpt_dir, _ = _speechbrain_run(tmp_path)
    break_it(run, ckpt_dir)
    out = tmp_path / "out"
    assert main([str(ckpt_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()
    assert not (run / "pwned").exists()


def test_hparams_option_is_refused_for_an_sgmse_file(tmp_path, capsys):
    args = [str(CKPT), "--out", str(tmp_path / "o"), "--hparams", "h.yaml"]
    assert main(args) == 1
    assert "--hparams is for a CKPT+... folder" in capsys.readouterr().err
