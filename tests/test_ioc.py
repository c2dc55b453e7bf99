"""Importance of Condition against its closed forms (docs/method.md §6)."""

import pytest
import torch

from speechbrain_elbo.ioc import importance_of_condition, ioc_curve
from speechbrain_elbo.oracle import GaussianOracle
from speechbrain_elbo.sde import OUVESDE, GeometricGNS, expand_time

TIMES = torch.tensor([0.03, 0.1, 0.3, 0.6, 1.0])


def data(sde, batch=4):
    oracle = GaussianOracle(sde, c=0.5, s0=0.2)
    generator = torch.Generator().manual_seed(0)
    y = 0.3 * torch.randn(
        batch, 1, 16, 16, dtype=torch.complex64, generator=generator
    )
    return oracle, oracle.sample_x0(y, generator), y


@pytest.mark.parametrize("method", ["fd", "jvp"])
@pytest.mark.parametrize("gns", [(0.05, 0.5), (0.05, 2.0)])
def test_matches_the_analytic_ioc(method, gns):
    sde = OUVESDE(GeometricGNS(*gns))
    oracle, x0, y = data(sde)
    curve = ioc_curve(
        oracle,
        sde,
        x0,
        y,
        TIMES,
        probes=8,
        method=method,
        generator=torch.Generator().manual_seed(1),
    )
    exact = oracle.importance_of_condition(TIMES)
    assert torch.allclose(curve["ioc"], exact, atol=0.01)
    assert torch.allclose(curve["sigma"], sde.std(TIMES))
    # it goes from ~0 at low noise to ~1 at high noise (not monotonically:
    # J_y changes sign where sigma^2 k / V crosses 1 - a)
    assert curve["ioc"][0] < 0.05 and curve["ioc"][-1] > 0.9


def test_zero_when_the_data_prediction_ignores_y():
    sde = OUVESDE(GeometricGNS())
    _, x0, y = data(sde)

    def score(x_t, y_, t):
        # chosen so that x0_hat = 0.5 x_t exactly, whatever y is
        a = expand_time(sde.decay(t), x_t)
        var = expand_time(sde.variance(t), x_t)
        return (a * 0.5 * x_t - x_t + (1 - a) * y_) / var

    for t in (0.05, 0.5, 1.0):
        ioc = importance_of_condition(score, sde, x0, y, t, probes=2)
        assert ioc.abs().max() < 1e-4


def test_a_score_that_ignores_y_keeps_the_tweedie_term():
    # s = -beta x gives x0_hat = ((1 - sigma^2 beta) x - (1 - a) y) / a
    sde = OUVESDE(GeometricGNS())
    _, x0, y = data(sde)
    beta = 3.0
    for t in (0.1, 0.8):
        tt = torch.tensor(t)
        a, var = sde.decay(tt), sde.variance(tt)
        J_x, J_y = (1 - var * beta) / a, -(1 - a) / a
        expected = (J_y**2 / (J_y**2 + J_x**2)).item()
        ioc = importance_of_condition(lambda x, c, s: -beta * x, sde, x0, y, t)
        assert torch.allclose(ioc, torch.full_like(ioc, expected), atol=1e-3)


def test_mask_errors_and_seeding():
    sde = OUVESDE(GeometricGNS())
    oracle, x0, y = data(sde, batch=2)
    run = lambda **kw: importance_of_condition(  # noqa: E731
        oracle,
        sde,
        x0,
        y,
        0.5,
        generator=torch.Generator().manual_seed(0),
        **kw,
    )
    assert torch.equal(run(), run())
    mask = torch.ones(2, 1, 1, 16)
    mask[1, ..., 8:] = 0
    assert run(mask=mask).shape == (2,)
    with pytest.raises(ValueError, match="'fd' or 'jvp'"):
        run(method="autograd")
    with pytest.raises(ValueError, match="probes"):
        run(probes=0)
