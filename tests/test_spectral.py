"""Spectral transform: docs/method.md section 1."""

import math

import pytest
import torch

from speechbrain_elbo.spectral import (
    SpectralTransform,
    crop_frames,
    frame_mask,
    pad_frames,
    peak_normalize,
    sample_mask,
)


def test_shapes_match_sgmse_settings():
    transform = SpectralTransform()
    spec = transform.encode(torch.randn(3, 32640))
    assert spec.shape == (3, 1, 256, 256)
    assert spec.dtype == torch.complex64


@pytest.mark.parametrize("length", [16000, 32640, 12345, 511])
def test_round_trip_within_1e4(length):
    generator = torch.Generator().manual_seed(length)
    wav = torch.rand(2, length, generator=generator) * 2 - 1
    transform = SpectralTransform()
    back = transform.decode(transform.encode(wav), length)
    assert back.shape == wav.shape
    assert (back - wav).abs().max() < 1e-4


def test_compression_formula_by_hand():
    transform = SpectralTransform(alpha=0.5, beta=0.15)
    X = torch.tensor([3.0 * torch.exp(torch.tensor(0.7j))], dtype=torch.cfloat)
    C = transform.compress(X)
    assert torch.allclose(C.abs(), torch.tensor([0.15 * math.sqrt(3.0)]))
    assert torch.allclose(C.angle(), torch.tensor([0.7]))
    assert torch.allclose(transform.decompress(C), X, atol=1e-6)
    assert transform.compress(torch.zeros(1, dtype=torch.cfloat)).abs() == 0


def test_other_alpha_beta_round_trip():
    transform = SpectralTransform(alpha=0.3, beta=0.5)
    X = torch.randn(1, 1, 256, 10, dtype=torch.cfloat)
    assert torch.allclose(
        transform.decompress(transform.compress(X)), X, atol=1e-5
    )


def test_stft_window_is_periodic_hann_of_510():
    transform = SpectralTransform()
    window = transform._window(torch.device("cpu"))
    n = torch.arange(510)
    expected = 0.5 - 0.5 * torch.cos(2 * math.pi * n / 510)
    assert torch.allclose(window, expected, atol=1e-6)


def test_decompress_has_finite_gradient_at_zero():
    transform = SpectralTransform()
    C = torch.zeros(1, 1, 256, 3, dtype=torch.cfloat, requires_grad=True)
    transform.decompress(C).abs().sum().backward()
    assert torch.isfinite(torch.view_as_real(C.grad)).all()


def test_stft_stays_float32_under_autocast():
    transform = SpectralTransform()
    wav = torch.randn(1, 4000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spec = transform.encode(wav)
        back = transform.decode(spec, 4000)
    assert spec.dtype == torch.complex64 and back.dtype == torch.float32
    assert (back - wav).abs().max() < 1e-4


def test_peak_normalize_and_undo():
    noisy = torch.tensor([[0.1, -0.8, 0.4], [2.0, 0.0, -1.0]])
    clean = noisy / 2
    n, c, scale = peak_normalize(noisy, clean)
    assert torch.equal(scale, torch.tensor([[0.8], [2.0]]))
    assert torch.allclose(n.abs().amax(-1), torch.ones(2))
    assert torch.allclose(n * scale, noisy) and torch.allclose(c * scale, clean)


def test_peak_normalize_ignores_padding():
    noisy = torch.tensor([[0.5, 0.25, 9.0, 9.0]])
    _, _, scale = peak_normalize(noisy, lengths=torch.tensor([0.5]))
    assert scale.item() == 0.5


def test_nan_in_the_padding_is_ignored():
    noisy = torch.tensor([[0.5, 0.25, float("nan"), float("inf")]])
    lengths = torch.tensor([0.5])
    _, _, scale = peak_normalize(noisy, lengths=lengths)
    assert scale.item() == 0.5
    long = torch.rand(1, 400)
    long[0, 200:] = float("nan")
    spec = SpectralTransform().encode(long, lengths)
    assert torch.isfinite(torch.view_as_real(spec)).all()


def test_peak_normalize_rejects_silence_and_nan():
    with pytest.raises(ValueError, match="silent"):
        peak_normalize(torch.zeros(2, 10).index_fill_(0, torch.tensor([0]), 1))
    with pytest.raises(ValueError, match="NaN or Inf"):
        peak_normalize(torch.tensor([[0.1, float("nan")]]))


def test_bad_shapes_are_clear_errors():
    transform = SpectralTransform()
    with pytest.raises(ValueError, match="batch, samples"):
        transform.encode(torch.randn(1, 2, 100))
    with pytest.raises(ValueError, match="256"):
        transform.decode(torch.zeros(1, 1, 100, 4, dtype=torch.cfloat), 10)
    with pytest.raises(ValueError, match="alpha"):
        SpectralTransform(alpha=0.0)


@pytest.mark.parametrize(
    "frames, multiple, expected",
    [(256, 64, 256), (1, 64, 64), (257, 64, 320), (5, 1, 5)],
)
def test_pad_and_crop(frames, multiple, expected):
    spec = torch.randn(2, 1, 8, frames, dtype=torch.cfloat)
    padded, n = pad_frames(spec, multiple)
    assert padded.shape[-1] == expected and n == frames
    assert torch.equal(crop_frames(padded, n), spec)
    assert padded[..., frames:].abs().sum() == 0


def test_relative_lengths_zero_the_padding():
    transform = SpectralTransform()
    wav = torch.randn(2, 8000)
    lengths = torch.tensor([1.0, 0.5])
    spec = transform.encode(wav, lengths)
    alone = transform.encode(wav[1:, :4000])
    mask = frame_mask(lengths, 8000, transform.hop_length)
    assert mask[1].sum() == alone.shape[-1]
    # its frames match its unpadded transform except the last two, whose
    # windows reach past the end (zeros here, reflection padding alone)
    keep = alone.shape[-1] - 2
    assert torch.allclose(spec[1, ..., :keep], alone[0, ..., :keep], atol=1e-5)
    out = transform.decode(spec, 8000, lengths)
    assert out[1, 4000:].abs().sum() == 0
    assert torch.equal(
        sample_mask(lengths, 4), torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
    )
