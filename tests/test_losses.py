"""Losses reach their analytic minima on the Gaussian oracle; the stage-1
loss builder and the refiner's data-domain loss."""

import math

import pytest
import torch

from speechbrain_elbo.losses import (
    DataPredictionLoss,
    LikelihoodLoss,
    RefinementLoss,
    SigmaSquaredLoss,
    build_score_loss,
    make_loss,
)
from speechbrain_elbo.oracle import GaussianOracle
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

C, S0 = 0.5, 0.3
BATCH = 20000


@pytest.fixture(scope="module")
def setup():
    sde = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)
    oracle = GaussianOracle(sde, c=C, s0=S0)
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(BATCH, 1, 2, 2, dtype=torch.complex64, generator=generator)
    x0 = oracle.sample_x0(y, generator)
    return sde, oracle, x0, y


def quadrature(sde, integrand):
    t = torch.linspace(sde.t_eps, sde.T, 200001, dtype=torch.float64)
    return torch.trapezoid(integrand(t), t).item()


def residual_power(sde, oracle, t):
    """Per-bin minimum of E|sigma s + z|^2: a_t^2 s0^2 / V_t."""
    return sde.decay(t) ** 2 * S0**2 / oracle.marginal_variance(t)


def per_utterance_spread(sde, oracle, weight):
    t = torch.linspace(sde.t_eps, sde.T, 1001, dtype=torch.float64)
    return (weight(t) * residual_power(sde, oracle, t)).std().item()


def test_sigma2_loss_reaches_its_minimum(setup):
    sde, oracle, x0, y = setup
    loss = make_loss("sigma2", sde)(
        oracle, x0, y, torch.Generator().manual_seed(1)
    )
    width = sde.T - sde.t_eps
    expected = quadrature(sde, lambda t: residual_power(sde, oracle, t)) / width
    stderr = per_utterance_spread(sde, oracle, lambda t: 1) / math.sqrt(BATCH)
    assert loss.item() == pytest.approx(expected, abs=5 * stderr + 2e-3)


def likelihood_minimum(sde, oracle):
    def integrand(t):
        ratio = sde.diffusion(t) ** 2 / sde.variance(t)
        return ratio * residual_power(sde, oracle, t)

    return quadrature(sde, integrand)


@pytest.mark.parametrize("importance", [True, False])
def test_likelihood_loss_is_unbiased_for_ldiff(setup, importance):
    sde, oracle, x0, y = setup
    loss = LikelihoodLoss(sde, importance_sampling=importance)
    values = torch.stack(
        [
            loss(oracle, x0, y, torch.Generator().manual_seed(seed))
            for seed in range(4)
        ]
    )
    expected = likelihood_minimum(sde, oracle)
    # both estimators share the mean; allow 5 standard errors of the four
    stderr = values.std().item() / 2
    assert values.mean().item() == pytest.approx(
        expected, abs=5 * stderr + 0.02
    )


def test_importance_sampling_lowers_the_variance(setup):
    sde, oracle, x0, y = setup

    def spread(importance):
        loss = LikelihoodLoss(sde, importance_sampling=importance)
        values = [
            loss(
                oracle, x0[:200], y[:200], torch.Generator().manual_seed(s)
            ).item()
            for s in range(30)
        ]
        return torch.tensor(values).std().item()

    assert spread(True) < spread(False)


def test_data_prediction_loss_reaches_the_posterior_variance(setup):
    sde, oracle, x0, y = setup
    loss = make_loss("data_prediction", sde)(
        oracle, x0, y, torch.Generator().manual_seed(2)
    )

    def posterior_variance(t):
        return S0**2 * sde.variance(t) / oracle.marginal_variance(t)

    expected = quadrature(sde, posterior_variance) / (sde.T - sde.t_eps)
    assert loss.item() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("name", ["sigma2", "likelihood", "data_prediction"])
def test_a_perturbed_score_has_a_larger_loss(setup, name):
    sde, oracle, x0, y = setup
    loss = make_loss(name, sde)

    def perturbed(x_t, y_, t):
        return 1.2 * oracle(x_t, y_, t)

    exact = loss(oracle, x0, y, torch.Generator().manual_seed(5))
    worse = loss(perturbed, x0, y, torch.Generator().manual_seed(5))
    assert worse > exact


def test_time_domain_term_adds_weighted_l1():
    sde = OUVESDE(GeometricGNS())
    oracle = GaussianOracle(sde, c=C, s0=S0)
    transform = SpectralTransform()
    y = torch.randn(2, 1, 256, 6, dtype=torch.complex64)
    x0 = oracle.sample_x0(y)
    plain = DataPredictionLoss(sde)(
        oracle, x0, y, torch.Generator().manual_seed(0)
    )
    both = DataPredictionLoss(sde, 0.5, transform)(
        oracle, x0, y, torch.Generator().manual_seed(0)
    )
    # rebuild the L1 term with the same random draws
    generator = torch.Generator().manual_seed(0)
    t = sde.sample_time(2, generator=generator)
    x_t, _ = sde.perturb(x0, y, t, generator)
    x0_hat = sde.data_prediction(x_t, y, t, oracle(x_t, y, t))
    length = 5 * transform.hop_length
    l1 = transform.decode(x0_hat, length) - transform.decode(x0, length)
    assert both.item() == pytest.approx(
        plain.item() + 0.5 * l1.abs().mean().item(), rel=1e-5
    )


def test_mask_excludes_padded_frames():
    sde = OUVESDE(GeometricGNS())
    oracle = GaussianOracle(sde, c=C, s0=S0)
    y = torch.randn(1, 1, 8, 4, dtype=torch.complex64)
    x0 = oracle.sample_x0(y)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)
    x0_bad, y_bad = x0.clone(), y.clone()
    x0_bad[..., 2:] = 1e3
    loss = make_loss("sigma2", sde)
    a = loss(oracle, x0, y, torch.Generator().manual_seed(0), mask)
    b = loss(oracle, x0_bad, y_bad, torch.Generator().manual_seed(0), mask)
    assert torch.allclose(a, b)


def test_unknown_names_and_bad_options():
    sde = OUVESDE(GeometricGNS())
    with pytest.raises(ValueError, match="choose one of"):
        make_loss("l2", sde)
    with pytest.raises(ValueError, match="SpectralTransform"):
        DataPredictionLoss(sde, time_l1_weight=0.1)


# -- the stage-1 loss builder and the refiner loss ---------------------------
RECIPE_SDE = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)


def test_build_score_loss_by_name():
    transform = SpectralTransform()
    assert isinstance(build_score_loss("sigma2", RECIPE_SDE), SigmaSquaredLoss)
    likelihood = build_score_loss(
        "likelihood", RECIPE_SDE, importance_sampling=False
    )
    assert isinstance(likelihood, LikelihoodLoss)
    assert likelihood.importance_sampling is False
    data = build_score_loss("data_prediction", RECIPE_SDE, transform, True, 0.1)
    assert isinstance(data, DataPredictionLoss) and data.time_l1_weight == 0.1
    with pytest.raises(ValueError, match="Unknown loss"):
        build_score_loss("elbo", RECIPE_SDE)
    with pytest.raises(ValueError, match="only applies to loss"):
        build_score_loss("likelihood", RECIPE_SDE, time_l1_weight=0.5)


def test_refinement_loss_terms():
    transform = SpectralTransform()
    target = torch.ones(1, 1, 256, 8, dtype=torch.complex64)
    estimate = 2 * target  # error 1 per bin, magnitude error 1
    assert RefinementLoss(transform, 1, 0, 0)(estimate, target).item() == (
        pytest.approx(1.0)
    )
    assert RefinementLoss(transform, 0, 3, 0)(estimate, target).item() == (
        pytest.approx(3.0)
    )
    both = RefinementLoss(transform, 1, 3, 0)(estimate * 1j, target).item()
    assert both == pytest.approx(5.0 + 3.0)  # |2i - 1|^2 = 5
    # masked frames do not count
    mask = torch.zeros(1, 1, 1, 8)
    mask[..., :4] = 1
    corrupted = estimate.clone()
    corrupted[..., 4:] = 100
    masked = RefinementLoss(transform, 1, 0, 0)(corrupted, target, mask)
    assert masked.item() == pytest.approx(1.0)
    # the waveform term vanishes for identical inputs and grows otherwise
    timed = RefinementLoss(transform, 0, 0, 1)
    assert timed(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert timed(estimate, target).item() > 0
    with pytest.raises(ValueError, match="at least one positive"):
        RefinementLoss(transform, 0, 0, 0)
    with pytest.raises(ValueError, match="mag_weight must be >= 0"):
        RefinementLoss(transform, 1, -1, 0)


def test_relative_waveform_term_judges_the_chosen_examples():
    from speechbrain_elbo.spectral import SpectralTransform

    transform = SpectralTransform(alpha=1.0, beta=1.0)  # linear: exact
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 256, 16, dtype=torch.complex64, generator=g)
    noise = torch.randn(2, 1, 256, 16, dtype=torch.complex64, generator=g)
    reference = target + 0.2 * noise
    loss = RefinementLoss(transform, 0.0, 0.0, 1.0, relative=True)
    # the identity leaves all of its input's error: ratio 1
    assert loss(reference, target, reference=reference).item() == (
        pytest.approx(1.0)
    )
    # halving the error of every example halves the waveform error
    half = target + 0.1 * noise
    assert loss(half, target, reference=reference).item() == pytest.approx(
        0.5, rel=1e-4
    )
    # only the chosen examples count: the second one's error is ignored
    mixed = torch.stack([half[0], target[1] + 5 * noise[1]])
    chosen = torch.tensor([True, False])
    out = loss(mixed, target, reference=reference, time_examples=chosen)
    assert out.item() == pytest.approx(0.5, rel=1e-4)
    # a batch without sampler outputs has no waveform term
    none = torch.tensor([False, False])
    assert loss(mixed, target, reference=reference, time_examples=none) == 0
