"""Tests of the NCSN++ score network, its layers and its YAML configurations."""

import pathlib
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml

from speechbrain_elbo.lobes.layers import (
    AttnBlock,
    FIRConv2d,
    FIRResample2d,
    fir_kernel_2d,
    group_norm,
)
from speechbrain_elbo.lobes.ncsnpp import NCSNpp

MODELS = pathlib.Path(__file__).resolve().parents[1] / "hparams" / "models"

# name: (module key, exact parameter count)
CONFIGS = {
    "ncsnpp.yaml": ("score_model", 65_590_822),
    "ncsnpp_m.yaml": ("score_model", 27_756_314),
    "small.yaml": ("score_model", 4_849_608),
    "tiny.yaml": ("score_model", 442_874),
    "refiner.yaml": ("refiner", 24_998_042),
    "refiner_small.yaml": ("refiner", 4_849_608),
    "refiner_tiny.yaml": ("refiner", 399_146),
}

TINY = dict(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=())


def count(module):
    return sum(p.numel() for p in module.parameters())


def load(name, overrides=None):
    with open(MODELS / name) as f:
        return load_hyperpyyaml(f, overrides)


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    return NCSNpp(**{**TINY, **kwargs})


def randomize_(module, seed=1, std=0.05):
    """Perturb all trainable weights so near-zero layers matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(std * torch.randn(p.shape, generator=gen))
    return module


# ---------------------------------------------------------------------------
# Parameter counts and YAML files
# ---------------------------------------------------------------------------


def test_default_constructor_is_sgmse_ncsnpp():
    net = NCSNpp()
    assert count(net) == 65_590_822
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == 65_590_822 - 128  # fixed Fourier frequencies
    assert net.frame_multiple == 64
    assert net.attn_levels == (4,)  # F = 256 / 2**4 = 16


def test_storm_ncsnpp_m_count():
    net = NCSNpp(ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=())
    assert count(net) == 27_756_314
    assert net.frame_multiple == 8


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_yaml_counts(name):
    key, expected = CONFIGS[name]
    hparams = load(name)
    assert count(hparams[key]) == expected
    assert (
        hparams[key].frame_multiple
        == 2 ** (len(hparams["ch_mult"]) - 1) * (hparams["patch_size"])
    )


def test_yaml_sizes_as_documented():
    assert 3e6 <= CONFIGS["small.yaml"][1] <= 5e6
    assert CONFIGS["tiny.yaml"][1] < 1e6
    assert CONFIGS["refiner_tiny.yaml"][1] < 1e6


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_yaml_key_is_used(name):
    key, _ = CONFIGS[name]
    text = (MODELS / name).read_text()
    top_level = re.findall(r"^([A-Za-z_]\w*):", text, flags=re.M)
    assert key in top_level
    for other in top_level:
        if other != key:
            assert f"!ref <{other}>" in text, f"{other} unused in {name}"
    # Every constructor argument written under the module is a !ref.
    body = text.split(f"{key}: !new:")[1].splitlines()[1:]
    assert body and all("!ref <" in line for line in body if line.strip())


def test_yaml_overrides_reach_the_module():
    base = load("tiny.yaml")["score_model"]
    hp = load("tiny.yaml", {"nf": 32, "patch_size": 2, "dropout": 0.25})
    net = hp["score_model"]
    assert count(net) > count(base)
    assert net.frame_multiple == 16
    drops = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.25}


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------


def test_shapes_and_dtypes():
    net = tiny().eval()
    x = torch.randn(3, 4, 32, 16)
    cond = torch.tensor([-3.0, -1.0, 0.0])
    out = net(x, cond)
    assert out.shape == (3, 2, 32, 16) and out.dtype == torch.float32
    out64 = net.double()(x.double(), cond.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, rtol=1e-4, atol=1e-5)


def test_scalar_cond_broadcasts_over_batch():
    net = tiny().eval()
    x = torch.randn(2, 4, 16, 8)
    a = net(x, torch.tensor(-2.0))
    b = net(x, torch.full((2,), -2.0))
    assert torch.equal(a, b)


def test_conditioning_changes_output():
    net = randomize_(tiny()).eval()
    x = torch.randn(1, 4, 16, 8)
    a = net(x, torch.tensor([-3.0]))
    b = net(x, torch.tensor([0.0]))
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("frames", [1, 7, 13, 24])
def test_any_frame_count_pads_and_crops(frames):
    net = randomize_(tiny()).eval()
    x = torch.randn(2, 4, 16, frames)
    cond = torch.tensor([-1.0, -2.0])
    out = net(x, cond)
    assert out.shape == (2, 2, 16, frames)
    padded = F.pad(x, (0, (-frames) % net.frame_multiple))
    assert torch.equal(out, net(padded, cond)[..., :frames])


def test_frequency_size_must_be_a_multiple():
    net = tiny()
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.randn(1, 4, 20, 8), torch.zeros(1))
    patched = tiny(patch_size=2)
    with pytest.raises(ValueError, match="multiple of 16"):
        patched(torch.randn(1, 4, 24, 8), torch.zeros(1))


def test_input_validation():
    net = tiny()
    x = torch.randn(2, 4, 16, 8)
    with pytest.raises(ValueError, match="conditional=True"):
        net(x)
    with pytest.raises(ValueError, match=r"shape \(B,\) = \(2,\)"):
        net(x, torch.zeros(3))
    with pytest.raises(ValueError, match="in_channels=4"):
        net(torch.randn(2, 2, 16, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="in_channels=4"):
        net(torch.randn(2, 4, 16, 8, dtype=torch.complex64), torch.zeros(2))
    uncond = tiny(conditional=False)
    assert not hasattr(uncond, "fourier")
    assert uncond(x).shape == (2, 2, 16, 8)
    with pytest.raises(ValueError, match="conditional=False"):
        uncond(x, torch.zeros(2))


def test_constructor_validation():
    with pytest.raises(ValueError, match="progressive must be one of"):
        NCSNpp(**TINY, progressive="skip")
    with pytest.raises(ValueError, match="resblock_type"):
        NCSNpp(**TINY, resblock_type="unet")
    with pytest.raises(ValueError, match="even length"):
        NCSNpp(**TINY, fir_kernel=(1, 2, 1))
    with pytest.raises(ValueError, match="multiple of 32"):
        NCSNpp(nf=48, ch_mult=(1, 2, 2), num_res_blocks=1)
    with pytest.raises(TypeError, match="list of integers"):
        NCSNpp(**{**TINY, "ch_mult": 2})


def test_every_parameter_gets_a_gradient():
    net = tiny().train()
    x = torch.randn(2, 4, 16, 8)
    net(x, torch.tensor([-1.0, 0.5])).square().sum().backward()
    fixed = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert fixed == ["fourier.W"]
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            assert p.grad.abs().sum() > 0, name


def test_same_seed_same_output():
    x = torch.randn(2, 4, 16, 12)
    cond = torch.tensor([-2.0, 0.0])
    a, b, c = tiny(seed=3), tiny(seed=3), tiny(seed=4)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.equal(a.fourier.W, b.fourier.W)
    assert not torch.equal(a.fourier.W, c.fourier.W)
    randomize_(a), randomize_(b)
    assert torch.equal(a.eval()(x, cond), b.eval()(x, cond))


def test_feature_divisor_scales_before_output_layer():
    net = randomize_(tiny()).eval()
    x = torch.randn(2, 4, 16, 8)
    cond = torch.tensor([-1.0, -2.0])
    sigma = torch.tensor([0.1, 0.4])
    layer = net.output_layer
    raw = net(x, cond)
    scaled = net(x, cond, feature_divisor=sigma)
    bias = layer.bias[None, :, None, None]
    expected = (raw - bias) / sigma[:, None, None, None] + bias
    torch.testing.assert_close(scaled, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(resblock_type="ddpm"),
        dict(progressive="residual", progressive_input="residual"),
        dict(progressive="none", progressive_input="none"),
        dict(progressive_combine="cat"),
        dict(attn_resolutions=(8,), num_freqs=32),
        dict(patch_size=2),
    ],
)
def test_architecture_options(options):
    net = tiny(**options)
    x = torch.randn(2, 4, 32, 11)
    out = net(x, torch.tensor([0.0, 1.0]))
    assert out.shape == (2, 2, 32, 11)
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_attention_levels_follow_frequency_size():
    net = tiny(attn_resolutions=(8,), num_freqs=32)
    # Level sizes 32, 16, 8, 4: attention at level 2 only.
    assert net.attn_levels == (2,)
    assert [len(a) for a in net.down_attn] == [0, 0, 1, 0]
    assert sum(isinstance(m, AttnBlock) for m in net.modules()) == 3


def test_patch_size_folds_spectrogram_patches():
    net = tiny(patch_size=2)
    assert net.frame_multiple == 16
    assert net.input_conv.in_channels == 16
    assert net.output_layer.out_channels == 8
    out = net(torch.randn(1, 4, 32, 5), torch.zeros(1))
    assert out.shape == (1, 2, 32, 5)


def test_autocast_bfloat16_on_cpu():
    net = randomize_(tiny())
    x = torch.randn(2, 4, 32, 10)
    cond = torch.tensor([-2.0, 0.0])
    reference = net(x, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, cond)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert torch.isfinite(out).all()
    rel = (out - reference).norm() / reference.norm()
    assert rel < 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(x, cond).square().mean()
    loss.backward()
    assert net.input_conv.weight.grad is not None


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def _upfirdn_1d(x, taps, up, down):
    """Naive upfirdn along the last axis (numpy, true convolution)."""
    k = np.asarray(taps, dtype=np.float64)
    k = k / k.sum() * up
    K = len(k)
    if up == 2:
        z = np.zeros(x.shape[:-1] + (2 * x.shape[-1],))
        z[..., ::2] = x
        pad = (K // 2, K // 2 - 1)
    else:
        z = x
        pad = (K // 2 - 1, K // 2 - 1)
    z = np.pad(z, [(0, 0)] * (z.ndim - 1) + [pad])
    out = np.apply_along_axis(lambda r: np.convolve(r, k, "valid"), -1, z)
    return out[..., ::down]


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 4, 3), (1, 1)])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_fir_resampling_matches_naive_upfirdn(taps, direction):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8))
    up, down = (2, 1) if direction == "up" else (1, 2)
    expected = _upfirdn_1d(x, taps, up, down)
    expected = _upfirdn_1d(expected.swapaxes(-1, -2), taps, up, down)
    expected = expected.swapaxes(-1, -2)
    layer = FIRResample2d(direction, taps)
    out = layer(torch.from_numpy(x)).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_fir_box_filter_is_nearest_and_average_pooling():
    x = torch.randn(1, 2, 4, 6)
    up = FIRResample2d("up", (1, 1))(x)
    torch.testing.assert_close(
        up, x.repeat_interleave(2, -1).repeat_interleave(2, -2)
    )
    down = FIRResample2d("down", (1, 1))(x)
    torch.testing.assert_close(down, F.avg_pool2d(x, 2))


def test_fir_kernel_2d():
    k = fir_kernel_2d([1, 3, 3, 1])
    assert k.shape == (4, 4) and abs(float(k.sum()) - 1) < 1e-7
    torch.testing.assert_close(k[1, 1], torch.tensor(9 / 64))
    with pytest.raises(ValueError, match="even length"):
        fir_kernel_2d([1, 2, 1])


@pytest.mark.parametrize("direction", ["up", "down"])
def test_fir_conv_matches_conv_then_resample_inside(direction):
    torch.manual_seed(0)
    conv = FIRConv2d(3, 5, direction).double()
    with torch.no_grad():
        conv.bias.normal_()
    resample = FIRResample2d(direction)
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    out = conv(x)
    if direction == "up":
        ref = F.conv2d(resample(x), conv.weight, conv.bias, padding=1)
    else:
        ref = resample(F.conv2d(x, conv.weight, conv.bias, padding=1))
    assert out.shape == ref.shape
    # The fused op differs from the unfused one only at the borders.
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = randomize_(AttnBlock(8, skip_rescale=True)).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    h = attn.norm(x)
    q, k, v = attn.qkv(h).flatten(2).chunk(3, dim=1)
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / 8**0.5, dim=-1)
    mixed = torch.einsum("bij,bcj->bci", w, v).reshape(2, 8, 3, 5)
    expected = (x + attn.proj(mixed)) / 2**0.5
    torch.testing.assert_close(attn(x), expected)


def test_group_norm_groups():
    assert group_norm(512).num_groups == 32
    assert group_norm(64).num_groups == 16
    with pytest.raises(ValueError, match="C >= 4"):
        group_norm(2)


@pytest.mark.parametrize("name", ["tiny.yaml", "small.yaml"])
def test_config_rebuilds_the_same_network(name):
    hparams = load(name)
    net = hparams["score_model"]
    # Every YAML hyper-parameter is recorded, as a plain value.
    for key, value in net.config.items():
        expected = hparams[key]
        assert value == expected, key
        assert not isinstance(value, tuple)
    torch.manual_seed(0)
    first = NCSNpp(**net.config)
    torch.manual_seed(0)
    second = NCSNpp(**first.config)
    assert first.config == second.config == net.config
    assert count(second) == CONFIGS[name][1]
    s1, s2 = first.state_dict(), second.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
