"""GNS and OUVE SDE: docs/method.md section 2."""

import math

import pytest
import torch

from speechbrain_elbo.sde import OUVESDE, GeometricGNS, complex_noise

SGMSE = dict(sigma_min=0.05, sigma_max=0.5)


def sgmse_sde(**kw):
    return OUVESDE(GeometricGNS(**SGMSE), gamma=1.5, t_eps=0.03, **kw)


def test_sgmse_sigma_at_the_ends():
    sde = sgmse_sde()
    sigma = sde.std(torch.tensor([0.03, 1.0], dtype=torch.float64))
    assert round(sigma[0].item(), 4) == 0.0188
    assert round(sigma[1].item(), 4) == 0.3890


def test_variance_by_hand():
    # sigma_t^2 = s^2 (e^{2Lt} - e^{-2 gamma t}) L / (gamma + L) at t = 0.5
    L = math.log(10.0)
    expected = 0.05**2 * (math.exp(L) - math.exp(-1.5)) * L / (1.5 + L)
    got = sgmse_sde().variance(torch.tensor(0.5, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    g = GeometricGNS(**SGMSE).diffusion(torch.tensor(0.5, dtype=torch.float64))
    assert g.item() == pytest.approx(0.05 * 10**0.5 * math.sqrt(2 * L))


@pytest.mark.parametrize("sigma_max, expected", [(0.5, 0.329), (1.0, 0.075)])
def test_prior_mismatch_coefficient(sigma_max, expected):
    sde = OUVESDE(GeometricGNS(0.05, sigma_max), gamma=1.5)
    snr_T = sde.snr(torch.tensor(1.0, dtype=torch.float64)).item()
    assert round(snr_T, 3) == expected
    sde = OUVESDE(GeometricGNS(0.01, 1.0), gamma=1.5)
    assert (
        round(sde.snr(torch.tensor(1.0, dtype=torch.float64)).item(), 3)
        == 0.066
    )


@pytest.mark.parametrize("gns", [(0.05, 0.5), (0.01, 1.0), (0.1, 3.0)])
@pytest.mark.parametrize("gamma", [0.5, 1.5, 3.0])
def test_variance_obeys_its_ode(gns, gamma):
    # d(sigma^2)/dt = -2 gamma sigma^2 + g^2, by central differences
    sde = OUVESDE(GeometricGNS(*gns), gamma=gamma)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    derivative = (sde.variance(t + h) - sde.variance(t - h)) / (2 * h)
    rhs = -2 * gamma * sde.variance(t) + sde.diffusion(t) ** 2
    assert torch.allclose(derivative, rhs, rtol=1e-6)
    assert sde.variance(torch.tensor(0.0, dtype=torch.float64)).item() == 0


def test_ratio_g2_over_sigma2_matches_method():
    sde = sgmse_sde()
    t = torch.tensor([0.03, 1.0], dtype=torch.float64)
    ratio = sde.diffusion(t) ** 2 / sde.variance(t)
    assert ratio[0].item() == pytest.approx(37.3, abs=0.05)
    assert ratio[1].item() == pytest.approx(7.6, abs=0.05)


def test_euler_maruyama_reproduces_the_marginal():
    """Simulate dx = gamma (y - x) dt + g dw and compare with q(x_t | x0, y)."""
    sde = sgmse_sde()
    n = 20000
    x0 = torch.full((n, 1, 1, 1), 0.3 - 0.2j, dtype=torch.complex128)
    y = torch.full_like(x0, 1.0 + 0.5j)
    generator = torch.Generator().manual_seed(0)
    steps, t_end = 2000, 0.8
    dt = t_end / steps
    x = x0.clone()
    for i in range(steps):
        t = torch.tensor(i * dt, dtype=torch.float64)
        z = torch.randn(x.shape, dtype=torch.complex128, generator=generator)
        x = x + sde.drift(x, y, t) * dt + sde.diffusion(t) * math.sqrt(dt) * z
    t = torch.tensor(t_end, dtype=torch.float64)
    mean = sde.mean(x0[:1], y[:1], t).squeeze()
    var = sde.variance(t).item()
    # standard errors: sqrt(var / n) for the mean, var sqrt(1 / n) for |.|^2
    assert abs(x.mean() - mean) < 4 * math.sqrt(var / n) + 1e-3
    empirical = (x - mean).abs().pow(2).mean().item()
    assert empirical == pytest.approx(var, rel=4 / math.sqrt(n) + 5e-3)


def test_perturb_and_prior_are_seeded_and_shaped():
    sde = sgmse_sde()
    x0 = torch.zeros(2, 1, 4, 5, dtype=torch.complex64)
    y = torch.ones_like(x0)
    t = torch.tensor([0.1, 0.9])
    a, za = sde.perturb(x0, y, t, torch.Generator().manual_seed(3))
    b, zb = sde.perturb(x0, y, t, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(za, zb)
    sigma = sde.std(t).view(2, 1, 1, 1)
    assert torch.allclose(a, sde.mean(x0, y, t) + sigma * za)
    prior = sde.prior_sample(y, torch.Generator().manual_seed(1))
    assert prior.shape == y.shape and prior.dtype == torch.complex64


def test_complex_noise_unit_power_split_evenly():
    z = complex_noise(
        torch.zeros(200000, dtype=torch.complex64),
        torch.Generator().manual_seed(0),
    )
    assert z.real.var().item() == pytest.approx(0.5, abs=0.01)
    assert z.imag.var().item() == pytest.approx(0.5, abs=0.01)


def test_reverse_and_flow_drifts_and_tweedie():
    sde = sgmse_sde()
    t = torch.tensor([0.4])
    x = torch.full((1, 1, 1, 1), 0.2 + 0.1j)
    y = torch.full_like(x, 1.0)
    s = torch.full_like(x, -3.0 + 1.0j)
    g2 = sde.diffusion(t).item() ** 2
    f = 1.5 * (y - x)
    assert torch.allclose(sde.reverse_drift(x, y, t, s), f - g2 * s)
    assert torch.allclose(
        sde.probability_flow_drift(x, y, t, s), f - 0.5 * g2 * s
    )
    a = math.exp(-1.5 * 0.4)
    var = sde.variance(t).item()
    expected = (x - (1 - a) * y + var * s) / a
    assert torch.allclose(sde.data_prediction(x, y, t, s), expected)


def test_tweedie_inverts_the_noise_with_the_conditional_score():
    # with s = -z / sigma (the regression target) Tweedie returns x0 exactly
    sde = sgmse_sde()
    x0 = torch.randn(3, 1, 8, 8, dtype=torch.complex64)
    y = torch.randn_like(x0)
    t = torch.tensor([0.05, 0.5, 1.0])
    x_t, z = sde.perturb(x0, y, t)
    s = -z / sde.std(t).view(3, 1, 1, 1)
    assert torch.allclose(sde.data_prediction(x_t, y, t, s), x0, atol=1e-5)


def test_prior_kl_closed_form():
    sde = sgmse_sde()
    x0 = torch.zeros(1, 1, 2, 2, dtype=torch.complex64)
    y = torch.full_like(x0, 2.0)
    expected = 0.329 * 4 * 4  # (a_T^2 / sigma_T^2) |x0 - y|^2
    assert sde.prior_kl(x0, y).item() == pytest.approx(expected, rel=2e-3)


def test_importance_sampling_of_time():
    sde = sgmse_sde()
    t = sde.sample_time_importance(
        100000, generator=torch.Generator().manual_seed(0)
    )
    assert t.min() >= 0.03 and t.max() <= 1.0
    # density g^2 / (sigma^2 Z): check the CDF at a few points by quadrature
    grid = torch.linspace(0.03, 1.0, 20001, dtype=torch.float64)
    density = sde.diffusion(grid) ** 2 / sde.variance(grid)
    Z = torch.trapezoid(density, grid).item()
    assert sde.log_snr_span() == pytest.approx(Z, rel=1e-6)
    for point in (0.05, 0.2, 0.6):
        inside = grid <= point
        cdf = torch.trapezoid(density[inside], grid[inside]).item() / Z
        assert (t <= point).float().mean().item() == pytest.approx(
            cdf, abs=0.01
        )
    # it is uniform in log SNR
    u = torch.tensor([0.0, 0.25, 0.5, 1.0])
    log_snr = torch.log(sde.snr(sde.importance_time(u).double()))
    steps = log_snr[1:] - log_snr[:-1]
    assert steps[0] / steps[1] == pytest.approx(1.0, abs=1e-3)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        GeometricGNS(0.5, 0.05)
    with pytest.raises(ValueError, match="t_eps"):
        OUVESDE(GeometricGNS(), t_eps=0.0)
    with pytest.raises(ValueError, match="gamma"):
        OUVESDE(GeometricGNS(), gamma=0)
