"""Tests of the stage-2 refinement model."""

import pathlib

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_elbo.lobes.ncsnpp import NCSNpp
from speechbrain_elbo.lobes.refiner import Refiner

MODELS = pathlib.Path(__file__).resolve().parents[1] / "hparams" / "models"
TINY = dict(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=())


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return Refiner(**{**TINY, **kwargs})


def spectrograms(shape=(2, 1, 32, 12), seed=0, dtype=torch.complex64):
    gen = torch.Generator().manual_seed(seed)
    x_hat = torch.randn(shape, dtype=dtype, generator=gen)
    y = torch.randn(shape, dtype=dtype, generator=gen)
    return x_hat, y


def perturb_last_layer_(refiner, seed=1):
    gen = torch.Generator().manual_seed(seed)
    layer = refiner.backbone.output_layer
    with torch.no_grad():
        layer.weight.copy_(0.1 * torch.randn(layer.weight.shape, generator=gen))
        layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=gen))
    return refiner


def test_fresh_refiner_is_the_identity():
    x_hat, y = spectrograms()
    for name in ("refiner_tiny.yaml", "refiner_small.yaml"):
        with open(MODELS / name) as f:
            refiner = load_hyperpyyaml(f)["refiner"]
        if refiner.conditional:  # the small one (docs/method.md section 7)
            refiner.set_levels(sample=0.07, decoder=0.017)
            assert torch.equal(refiner.decode(x_hat, y), x_hat)
        # Frames: a multiple of neither 8 nor 16; F = 32 works for both.
        out = refiner.train()(x_hat, y)
        assert torch.equal(out, x_hat)


def test_backbone_is_unconditional_with_zero_last_layer():
    refiner = tiny()
    backbone = refiner.backbone
    assert isinstance(backbone, NCSNpp) and not backbone.conditional
    assert backbone.in_channels == 4 and backbone.out_channels == 2
    assert not hasattr(backbone, "fourier")
    assert torch.count_nonzero(backbone.output_layer.weight) == 0
    assert torch.count_nonzero(backbone.output_layer.bias) == 0
    assert refiner.frame_multiple == 8


def test_shapes_dtypes_and_odd_frames():
    refiner = perturb_last_layer_(tiny()).eval()
    for frames in (1, 9, 16):
        x_hat, y = spectrograms((3, 1, 32, frames))
        out = refiner(x_hat, y)
        assert out.shape == (3, 1, 32, frames)
        assert out.dtype == torch.complex64
        assert not torch.equal(out, x_hat)
    x_hat, y = spectrograms(dtype=torch.complex128)
    out = refiner.double()(x_hat, y)
    assert out.dtype == torch.complex128


def test_output_is_x_hat_plus_backbone_delta():
    refiner = perturb_last_layer_(tiny()).eval()
    x_hat, y = spectrograms()
    stacked = torch.cat([x_hat.real, x_hat.imag, y.real, y.imag], dim=1)
    delta = refiner.backbone(stacked)
    expected = x_hat + torch.complex(delta[:, :1], delta[:, 1:])
    assert torch.equal(refiner(x_hat, y), expected)
    # The noisy input matters.
    other_y = spectrograms(seed=5)[1]
    assert not torch.allclose(refiner(x_hat, other_y), expected)


def test_every_parameter_gets_a_gradient():
    refiner = tiny()
    x_hat, y = spectrograms()
    target = torch.randn_like(x_hat)
    # Fresh: the zero last layer blocks gradients to the layers below it
    # (they are zero, not missing), but the last layer itself learns.
    (refiner(x_hat, y) - target).abs().square().sum().backward()
    assert all(p.grad is not None for p in refiner.parameters())
    assert refiner.backbone.output_layer.weight.grad.abs().sum() > 0
    # After one step away from zero every parameter gets a gradient.
    refiner.zero_grad()
    perturb_last_layer_(refiner)
    (refiner(x_hat, y) - target).abs().square().sum().backward()
    for name, p in refiner.named_parameters():
        assert p.requires_grad, name
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_same_seed_same_output():
    x_hat, y = spectrograms()
    a = perturb_last_layer_(tiny(seed=7)).eval()
    b = perturb_last_layer_(tiny(seed=7)).eval()
    c = perturb_last_layer_(tiny(seed=8)).eval()
    assert torch.equal(a(x_hat, y), b(x_hat, y))
    assert not torch.equal(a(x_hat, y), c(x_hat, y))


def test_autocast_bfloat16_on_cpu():
    refiner = perturb_last_layer_(tiny())
    x_hat, y = spectrograms()
    reference = refiner(x_hat, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = refiner(x_hat, y)
    assert out.dtype == torch.complex64
    delta, ref_delta = out - x_hat, reference - x_hat
    assert (delta - ref_delta).abs().norm() < 0.05 * ref_delta.abs().norm()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (refiner(x_hat, y) - y).abs().square().mean()
    loss.backward()
    assert refiner.backbone.input_conv.weight.grad is not None


def test_input_validation():
    refiner = tiny()
    x_hat, y = spectrograms()
    with pytest.raises(ValueError, match="x_hat must be a complex tensor"):
        refiner(x_hat.real, y)
    with pytest.raises(ValueError, match="y must be a complex tensor"):
        refiner(x_hat, y[:, 0])
    with pytest.raises(ValueError, match="same shape"):
        refiner(x_hat, y[..., :5])
    with pytest.raises(ValueError, match="multiple of 8"):
        refiner(*spectrograms((1, 1, 20, 8)))


def test_yaml_overrides():
    with open(MODELS / "refiner_tiny.yaml") as f:
        refiner = load_hyperpyyaml(f, {"patch_size": 2, "nf": 32})["refiner"]
    assert refiner.frame_multiple == 16
    assert refiner.backbone.input_conv.out_channels == 32


def test_config_rebuilds_the_same_network():
    with open(MODELS / "refiner_small.yaml") as f:
        hparams = load_hyperpyyaml(f)
    refiner = hparams["refiner"]
    assert set(refiner.config) == {k for k in hparams if k != "refiner"}
    for key, value in refiner.config.items():
        assert value == hparams[key], key
    rebuilt = Refiner(**refiner.config)
    assert rebuilt.config == refiner.config
    assert sum(p.numel() for p in rebuilt.parameters()) == 4_849_608


def test_class_defaults_are_refiner_yaml():
    with open(MODELS / "refiner.yaml") as f:
        from_yaml = load_hyperpyyaml(f)["refiner"]
    default = Refiner()
    assert default.config == from_yaml.config
    assert sum(p.numel() for p in default.parameters()) == 24_998_042


# -- the conditional refiner (docs/method.md, section 7) ---------------------
def test_conditional_warm_start_begins_as_the_unconditional_refiner():
    source = tiny(seed=3)
    with torch.no_grad():  # every layer matters, the zero-initialised too
        for param in source.parameters():
            param.add_(0.05 * torch.randn_like(param))
    target = tiny(seed=4, conditional=True)
    target.load_warm_start(source.state_dict())
    target.set_levels(sample=0.07, decoder=0.017)
    x_hat, y = spectrograms()
    with torch.no_grad():
        expected = source(x_hat, y)
        assert torch.allclose(target(x_hat, y), expected, atol=1e-6)
        assert torch.allclose(target.decode(x_hat, y), expected, atol=1e-6)
        # once its conditioning layers are trained, the two jobs differ
        for name, param in target.backbone.named_parameters():
            if ".dense." in f".{name}":
                param.normal_(0.0, 0.2)
        assert not torch.allclose(
            target(x_hat, y), target.decode(x_hat, y), atol=1e-4
        )
        # per-example levels: each example at its own level
        both = target(x_hat, y, torch.tensor([0.07, 0.017]))
        assert torch.allclose(both[0], target(x_hat, y)[0], atol=1e-6)
        assert torch.allclose(both[1], target.decode(x_hat, y)[1], atol=1e-6)


def test_conditional_refiner_levels_are_checked():
    refiner = tiny(conditional=True)
    x_hat, y = spectrograms()
    with pytest.raises(ValueError, match="call set_levels"):
        refiner(x_hat, y)
    with pytest.raises(ValueError, match="decoder level must be a positive"):
        refiner.set_levels(sample=0.1, decoder=0.0)
    with pytest.raises(ValueError, match="not conditional"):
        tiny().set_levels(sample=0.1, decoder=0.01)
    refiner.set_levels(sample=0.1, decoder=0.01)
    # the levels travel with the weights (export, checkpoints)
    copy = tiny(seed=5, conditional=True)
    copy.load_state_dict(refiner.state_dict())
    assert copy.decoder_level.item() == pytest.approx(0.01)


def test_warm_start_refuses_another_layout():
    with pytest.raises(ValueError, match="same layout"):
        tiny(nf=8).load_warm_start(tiny().state_dict())
    # an unconditional refiner does not start from a conditional one
    with pytest.raises(ValueError, match="mismatched keys"):
        tiny().load_warm_start(tiny(conditional=True).state_dict())
