"""Samplers against the exact Gaussian marginal (docs/method.md sections 5, 6).

Started from the exact marginal x_T ~ CN(k_T y, V_T) with the exact score,
a correct sampler returns x0 ~ CN(c y, s0^2). With 64 x 1024 bins the Monte
Carlo error of the mean is about 0.0012 and of the variance about 0.4 %; the
tolerances below add the measured discretisation error of each scheme at
N = 30 (PC about 1 % on the mean, Heun well under 1 %).
"""

import pytest
import torch

from speechbrain_elbo.oracle import GaussianOracle
from speechbrain_elbo.sampling import (
    Sampler,
    sample_euler,
    sample_heun,
    sample_pc,
    time_grid,
)
from speechbrain_elbo.sde import OUVESDE, GeometricGNS

C, S0 = 0.5, 0.3
Y = 1.0 + 0.5j


def moments(sampler, steps, gns=(0.05, 0.5), **kw):
    sde = OUVESDE(GeometricGNS(*gns))
    oracle = GaussianOracle(sde, c=C, s0=S0)
    y = torch.full((4, 1, 64, 256), Y, dtype=torch.complex64)
    generator = torch.Generator().manual_seed(0)
    x_T = oracle.sample_marginal(y, torch.ones(4), generator)
    x, nfe = sampler(
        oracle, sde, y, steps=steps, x_T=x_T, generator=generator, **kw
    )
    residual = x - C * y
    mean_error = abs(complex(residual.mean()))
    variance = (residual - residual.mean()).abs().pow(2).mean().item()
    return mean_error, variance, nfe


@pytest.mark.parametrize("gns", [(0.05, 0.5), (0.05, 1.0)])
def test_pc_reproduces_mean_and_variance(gns):
    mean_error, variance, nfe = moments(sample_pc, 30, gns)
    assert nfe == 60
    assert mean_error < 0.02 * abs(C * Y)
    assert variance == pytest.approx(S0**2, rel=0.03)


def test_heun_reproduces_mean_and_variance():
    mean_error, variance, nfe = moments(sample_heun, 30)
    assert nfe == 59
    assert mean_error < 0.005
    assert variance == pytest.approx(S0**2, rel=0.02)


def test_euler_converges_with_more_steps():
    errors = [abs(moments(sample_euler, n)[1] - S0**2) for n in (5, 20, 80)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01


def test_pc_without_corrector_counts_one_call_per_step():
    _, variance, nfe = moments(sample_pc, 30, corrector_steps=0)
    assert nfe == 30
    assert variance == pytest.approx(S0**2, rel=0.05)


@pytest.mark.parametrize("name", ["pc", "euler", "heun"])
def test_same_seed_same_output_and_batching(name):
    sde = OUVESDE(GeometricGNS())
    oracle = GaussianOracle(sde, c=C, s0=S0)
    y = torch.randn(3, 1, 8, 8, dtype=torch.complex64)
    sampler = Sampler(name, steps=4)
    a, _ = sampler(oracle, sde, y, seed=7)
    b, _ = sampler(oracle, sde, y, seed=7)
    c, _ = sampler(oracle, sde, y, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == y.shape and a.dtype == torch.complex64


def test_time_grid_and_nfe_counts():
    sde = OUVESDE(GeometricGNS(), t_eps=0.03)
    grid = time_grid(sde, 30)
    assert len(grid) == 31 and grid[0] == 1.0 and grid[-1] == 0.0
    assert grid[-2].item() == pytest.approx(0.03)
    oracle = GaussianOracle(sde)
    y = torch.zeros(1, 1, 2, 2, dtype=torch.complex64)
    assert Sampler("pc", 30, corrector_steps=2)(oracle, sde, y)[1] == 90
    assert Sampler("euler", 7)(oracle, sde, y)[1] == 7
    assert Sampler("heun", 1)(oracle, sde, y)[1] == 1
    with pytest.raises(ValueError, match="choose one of"):
        Sampler("ddim")
    with pytest.raises(ValueError, match="steps"):
        time_grid(sde, 0)


def test_progress_bar_runs():
    sde = OUVESDE(GeometricGNS())
    y = torch.zeros(1, 1, 2, 2, dtype=torch.complex64)
    x, nfe = sample_pc(GaussianOracle(sde), sde, y, steps=2, progress=True)
    assert nfe == 4 and torch.isfinite(torch.view_as_real(x)).all()
