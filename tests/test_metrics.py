"""PESQ-WB, ESTOI, SI-SDR, their MetricStats wrapper and the bootstrap
interval of per-utterance values."""

import math

import pytest
import torch

from speechbrain_elbo.metrics import (
    EnhancementMetrics,
    bootstrap_interval,
    estoi,
    gather_objects,
    nan_mean,
    pesq_wb,
    si_sdr,
)

RATE = 16000


def speechlike(seconds=1.0, seed=0):
    """Harmonics with a syllable envelope: PESQ's VAD finds speech in it."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * RATE)) / RATE
    f0 = 120 + 60 * torch.rand(1, generator=g)
    voice = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = torch.sin(2 * math.pi * 4 * t).clamp_min(0) ** 2
    return 0.2 * voice * envelope


def test_si_sdr_closed_form():
    ref = torch.tensor([[1.0, -1.0, 2.0, -2.0]])
    noise = torch.tensor([[0.5, 0.5, -0.5, -0.5]])  # orthogonal, zero mean
    # |ref|^2 / |noise|^2 = 10 / 1
    assert si_sdr(ref + noise, ref).item() == pytest.approx(10.0, abs=1e-4)
    # scale invariance and a DC offset (removed by zero_mean)
    assert si_sdr(3 * (ref + noise) + 1.0, ref).item() == pytest.approx(
        10.0, abs=1e-4
    )
    assert si_sdr(ref + noise + 1.0, ref, zero_mean=False).item() < 9.0


def test_si_sdr_ignores_padding():
    clean = speechlike(0.5)
    noisy = clean + 0.05 * torch.randn(
        clean.shape, generator=torch.Generator().manual_seed(1)
    )
    alone = si_sdr(noisy, clean)
    pad = torch.randn(4000) * 10
    padded = si_sdr(
        torch.cat([noisy, pad])[None],
        torch.cat([clean, torch.zeros(4000)])[None],
        lengths=torch.tensor([clean.numel() / (clean.numel() + 4000)]),
    )
    assert padded.item() == pytest.approx(alone.item(), abs=1e-3)


def test_si_sdr_shape_error():
    with pytest.raises(ValueError, match="differ in shape"):
        si_sdr(torch.zeros(1, 4), torch.zeros(1, 5))


def test_pesq_and_estoi_order_quality():
    clean = speechlike(1.0)
    g = torch.Generator().manual_seed(2)
    slightly = clean + 0.005 * torch.randn(clean.shape, generator=g)
    badly = clean + 0.1 * torch.randn(clean.shape, generator=g)
    assert pesq_wb(clean, clean) > 4.5
    assert pesq_wb(slightly, clean) > pesq_wb(badly, clean)
    assert estoi(clean, clean) == pytest.approx(1.0, abs=1e-6)
    assert estoi(slightly, clean) > estoi(badly, clean)


def test_pesq_errors():
    clean = speechlike(1.0)
    with pytest.raises(ValueError, match="16 kHz"):
        pesq_wb(clean, clean, sample_rate=8000)
    with pytest.raises(ValueError, match="equal length"):
        pesq_wb(clean, clean[:-1])
    assert math.isnan(pesq_wb(clean, torch.zeros_like(clean)))


def test_enhancement_metrics_summary_and_failures():
    clean = speechlike(1.0)
    stats = EnhancementMetrics()
    batch = torch.stack([clean, torch.zeros_like(clean)])
    references = torch.stack([clean, torch.zeros_like(clean)])
    stats.append(["good", "silent"], batch, references)
    summary = stats.summarize()
    assert summary["count"] == 2
    assert summary["pesq_failed"] == 1  # no utterance in silence
    assert summary["pesq"] > 4.5  # the NaN is left out of the mean
    table = stats.per_utterance()
    assert set(table) == {"good", "silent"}
    assert set(table["good"]) == {"pesq", "estoi", "si_sdr"}
    stats.merge_ranks()  # single process: unchanged
    assert stats.per_utterance()["good"] == table["good"]


def test_enhancement_metrics_lengths_and_errors():
    clean = speechlike(1.0)
    padded = torch.cat([clean, torch.ones(8000)])[None]
    stats = EnhancementMetrics(metrics=("si_sdr",))
    stats.append(
        ["u"],
        padded,
        torch.cat([clean, torch.zeros(8000)])[None],
        lengths=torch.tensor([clean.numel() / padded.shape[1]]),
    )
    assert stats.summarize()["si_sdr"] > 60
    with pytest.raises(ValueError, match="Unknown metric"):
        EnhancementMetrics(metrics=("mos",))


def test_helpers():
    assert nan_mean([1.0, float("nan"), 2.0]) == 1.5
    assert math.isnan(nan_mean([float("nan")]))
    assert gather_objects(3) == [3]


def test_bootstrap_interval_hand_checkable():
    # the same shift on every item: no spread, whatever the resample
    assert bootstrap_interval([2.0, 5.0, 4.0], base=[1.0, 4.0, 3.0]) == (
        1.0,
        1.0,
        1.0,
    )
    # differences 0 and 1: the mean of a resample of two is 0, 0.5 or 1
    # with probabilities 1/4, 1/2, 1/4, so the 2.5 and 97.5 percentiles
    # are the extremes
    assert bootstrap_interval([0.0, 1.0], resamples=4000) == (0.5, 0.0, 1.0)
    # paired: a large shared item effect does not widen the interval
    paired = bootstrap_interval([10.1, 0.1, 5.1, -3.9], base=[10, 0, 5, -4])
    assert paired == pytest.approx((0.1, 0.1, 0.1))
    unpaired = bootstrap_interval([10.1, 0.1, 5.1, -3.9])
    assert unpaired[2] - unpaired[1] > 5
    # pooled ratio, not a mean of ratios: 3 in 10 and 0 in 2 is 0.25
    assert bootstrap_interval([3, 0], weights=[10, 2])[0] == 0.25
    with pytest.raises(ValueError, match="one value per item"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="one weight and one base value"):
        bootstrap_interval([1.0, 2.0], base=[1.0])
