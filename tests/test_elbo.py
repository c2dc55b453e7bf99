"""ELBO estimator against the Gaussian oracle (docs/method.md sections 4, 6).

With the exact score, -ELBO - NLL equals two KL divergences that have
closed forms here: KL(q(x_T | y) || CN(y, sigma_T^2)) between the true and
the assumed marginal at T, and KL(q(x0 | x_eps) || p_dec) between the true
posterior CN(posterior mean, s0^2 sigma^2 / V) and the decoder
CN(posterior mean, sigma^2 / a^2) at t_eps. The tests compare the
estimated gap with that value within three standard errors.
"""

import math

import pytest
import torch

from speechbrain_elbo.elbo import fit_decoder_variance, negative_elbo
from speechbrain_elbo.oracle import GaussianOracle
from speechbrain_elbo.sde import OUVESDE, GeometricGNS

C, S0 = 0.5, 0.02
BATCH, BINS = 512, 16


def kl_gaussians(var_p, var_q, mean_sq):
    """KL(CN(m1, var_p) || CN(m2, var_q)) per complex bin."""
    return math.log(var_q / var_p) + var_p / var_q - 1 + mean_sq / var_q


def analytic_gap(sde, oracle, y):
    one = torch.tensor(sde.T, dtype=torch.float64)
    eps = torch.tensor(sde.t_eps, dtype=torch.float64)
    var_T, V_T = sde.variance(one).item(), oracle.marginal_variance(one).item()
    shift = ((oracle.gain(one).item() - 1) ** 2) * y.abs().pow(2).mean().item()
    prior = kl_gaussians(V_T, var_T, shift)
    var_e, a_e = sde.variance(eps).item(), sde.decay(eps).item()
    posterior = S0**2 * var_e / oracle.marginal_variance(eps).item()
    decoder = kl_gaussians(posterior, var_e / a_e**2, 0.0)
    return prior + decoder


def estimate(sde, oracle, score=None, seed=0, **kw):
    generator = torch.Generator().manual_seed(seed)
    y = 0.3 * torch.randn(
        BATCH, 1, 4, 4, dtype=torch.complex64, generator=generator
    )
    x0 = oracle.sample_x0(y, generator)
    terms = negative_elbo(
        score or oracle, sde, x0, y, generator=generator, units="nats", **kw
    )
    gap = (terms.total - oracle.nll(x0, y)) / BINS
    stderr = terms.stderr.pow(2).sum().sqrt().item() / BATCH / BINS
    return terms, gap.mean().item(), stderr, x0, y


@pytest.mark.parametrize("t_eps", [0.03, 0.003])
def test_gap_matches_closed_form_with_exact_score(t_eps):
    sde = OUVESDE(GeometricGNS(0.05, 5.0), t_eps=t_eps)
    oracle = GaussianOracle(sde, c=C, s0=S0)
    _, gap, stderr, _, y = estimate(sde, oracle, diffusion_samples=32)
    expected = analytic_gap(sde, oracle, y)
    # the bound holds on average ...
    assert gap > -3 * stderr
    # ... and its gap is the closed form (sampling noise of x0 included)
    assert gap == pytest.approx(expected, abs=3 * stderr + 0.02)


def test_gap_shrinks_as_t_eps_shrinks():
    gaps = []
    for t_eps in (0.03, 0.003):
        sde = OUVESDE(GeometricGNS(0.05, 5.0), t_eps=t_eps)
        gaps.append(estimate(sde, GaussianOracle(sde, C, S0))[1])
    assert gaps[1] < gaps[0] - 0.1


def test_sgmse_gns_pays_the_prior_mismatch():
    sde = OUVESDE(GeometricGNS(0.05, 0.5), t_eps=0.003)
    oracle = GaussianOracle(sde, c=C, s0=S0)
    terms, gap, stderr, x0, y = estimate(sde, oracle)
    assert gap == pytest.approx(
        analytic_gap(sde, oracle, y), abs=3 * stderr + 0.02
    )
    # the prior term is the closed form (a_T^2 / sigma_T^2) |x0 - y|^2
    one = torch.tensor(1.0)
    expected = sde.snr(one) * (x0 - y).abs().pow(2).flatten(1).sum(-1)
    assert torch.allclose(terms.prior, expected, rtol=1e-5)


def test_perturbed_score_gives_a_larger_bound():
    sde = OUVESDE(GeometricGNS(0.05, 0.5))
    oracle = GaussianOracle(sde, c=C, s0=S0)

    def perturbed(x_t, y, t):
        return oracle(x_t, y, t) * 1.1 + 0.05

    exact = estimate(sde, oracle, seed=3)
    worse = estimate(sde, oracle, score=perturbed, seed=3)
    assert worse[1] > exact[1] + 3 * (worse[2] + exact[2])


def test_units_decoder_and_fitted_variance():
    sde = OUVESDE(GeometricGNS(0.05, 0.5))
    oracle = GaussianOracle(sde, c=C, s0=S0)
    y = 0.3 * torch.randn(4, 1, 8, 8, dtype=torch.complex64)
    x0 = oracle.sample_x0(y)

    def run(**kw):
        return negative_elbo(
            oracle,
            sde,
            x0,
            y,
            diffusion_samples=4,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )

    nats, bits = run(units="nats"), run()
    assert torch.allclose(bits.total, nats.total / (2 * 64 * math.log(2)))
    # the identity decoder is the stage-1 decoder
    same = run(decoder=lambda x0_hat, y_: x0_hat)
    assert torch.allclose(same.total, bits.total)
    # the fitted variance of the exact posterior mean is the posterior
    # variance: |error|^2 of a complex Gaussian has sd equal to its mean, so
    # the mean over n bins has a relative standard error of 1 / sqrt(n);
    # seeded draws, checked within 4 standard errors
    g = torch.Generator().manual_seed(11)
    big_y = 0.3 * torch.randn(64, 1, 16, 16, dtype=torch.complex64, generator=g)
    v = fit_decoder_variance(
        oracle, sde, oracle.sample_x0(big_y, g), big_y, generator=g
    )
    eps = torch.tensor(sde.t_eps)
    posterior = S0**2 * sde.variance(eps) / oracle.marginal_variance(eps)
    assert v == pytest.approx(
        posterior.item(), rel=4 / math.sqrt(big_y.numel())
    )


def test_mask_and_summary_and_errors():
    sde = OUVESDE(GeometricGNS())
    oracle = GaussianOracle(sde, c=C, s0=S0)
    y = torch.randn(2, 1, 4, 6, dtype=torch.complex64)
    x0 = oracle.sample_x0(y)
    mask = torch.tensor([[1.0] * 6, [1, 1, 1, 0, 0, 0]]).view(2, 1, 1, 6)
    noisy_pad = y.clone()
    noisy_pad[1, ..., 3:] = 50.0
    a = negative_elbo(
        oracle,
        sde,
        x0,
        y,
        4,
        mask=mask,
        generator=torch.Generator().manual_seed(0),
    )
    b = negative_elbo(
        oracle,
        sde,
        x0 * mask,
        noisy_pad,
        4,
        mask=mask,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.allclose(a.prior, b.prior)
    summary = a.summary()
    assert set(summary) == {
        "prior",
        "diffusion",
        "reconstruction",
        "total",
        "stderr",
        "units",
    }
    with pytest.raises(ValueError, match="even"):
        negative_elbo(oracle, sde, x0, y, diffusion_samples=3)
