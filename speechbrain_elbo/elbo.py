"""The negative ELBO of a score model and its three terms (docs/method.md §4).

For one utterance with n = 2 F T real dimensions, in nats,

    -ELBO = L_prior + L_diff + L_rec
    L_prior = (a_T^2 / sigma_T^2) |x0 - y|^2
    L_diff  = int_{t_eps}^{T} (g^2 / sigma^2) E_z |sigma_t s + z|^2 dt
    L_rec   = E[-log CN(x0; m, v I)],  x_{t_eps} ~ q(. | x0, y)

L_diff is estimated by Monte Carlo with t drawn proportionally to
g^2/sigma^2 (uniformly in log SNR), whose importance weight is the constant
Z = int g^2/sigma^2 dt: each draw then has a bounded contribution even when
t_eps is small, where the integrand grows like 1/t. The K draws are
stratified (two per K/2-quantile of the proposal), which keeps the estimator
unbiased and removes most of its variance; the two draws of each stratum give
an unbiased estimate of the standard error. The decoder mean m is
the Tweedie estimate at t_eps (stage 1), or a refinement model applied to it
(two stages); its variance v is sigma_{t_eps}^2 / a_{t_eps}^2 by default or
a value fitted on held-out data (:func:`fit_decoder_variance`).

Results are reported in bits per real dimension, -ELBO / (n ln 2), with a
Monte Carlo standard error.

Example
-------
>>> from speechbrain_elbo.oracle import GaussianOracle
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> sde = OUVESDE(GeometricGNS(0.05, 5.0))
>>> oracle = GaussianOracle(sde, c=0.5, s0=0.2)
>>> y = torch.ones(2, 1, 16, 16, dtype=torch.complex64)
>>> g = torch.Generator().manual_seed(0)
>>> terms = negative_elbo(oracle, sde, oracle.sample_x0(y, g), y, generator=g)
>>> terms.total.shape
torch.Size([2])
"""

import math
from dataclasses import dataclass

import torch

from speechbrain_elbo.sde import expand_time

__all__ = [
    "ELBOTerms",
    "negative_elbo",
    "fit_decoder_variance",
    "decoder_input",
]


@dataclass
class ELBOTerms:
    """Per-utterance terms of the negative ELBO, each of shape (B,).

    Units are bits per real dimension unless ``units == "nats"`` (then nats
    per utterance).
    """

    prior: torch.Tensor
    diffusion: torch.Tensor
    reconstruction: torch.Tensor
    stderr: torch.Tensor
    units: str = "bits_per_dim"

    @property
    def total(self):
        """-ELBO = prior + diffusion + reconstruction."""
        return self.prior + self.diffusion + self.reconstruction

    def summary(self):
        """Means over the batch as plain floats, for logs and reports.

        The standard error of the mean combines the per-utterance errors.
        """
        count = self.total.numel()
        return {
            "prior": self.prior.mean().item(),
            "diffusion": self.diffusion.mean().item(),
            "reconstruction": self.reconstruction.mean().item(),
            "total": self.total.mean().item(),
            "stderr": (self.stderr.pow(2).sum().sqrt() / count).item(),
            "units": self.units,
        }


def _bin_sum(values, mask):
    if mask is not None:
        values = values * mask
    return values.flatten(1).sum(-1)


def _mean_and_stderr(samples):
    samples = torch.stack(samples)
    stderr = samples.std(dim=0, unbiased=True) / math.sqrt(len(samples))
    return samples.mean(dim=0), stderr


def _stratified_time(sde, stratum, strata, batch, generator):
    # a uniform draw in stratum k of the importance-sampling variable u
    source = "cpu" if generator is None else generator.device
    u = (
        stratum + torch.rand(batch, generator=generator, device=source)
    ) / strata
    return sde.importance_time(u)


def _stratified_mean_and_stderr(samples):
    # Two draws per stratum: stratum j's mean has variance (f_a - f_b)^2 / 4,
    # and the estimate averages S strata: Var = sum_j (f_a - f_b)^2 / (4 S^2).
    samples = torch.stack(samples)
    strata = len(samples) // 2
    pairs = samples[0::2] - samples[1::2]
    stderr = pairs.pow(2).sum(dim=0).sqrt() / (2 * strata)
    return samples.mean(dim=0), stderr


@torch.no_grad()
def decoder_input(score_model, sde, x0, y, generator=None):
    """What the decoder of the ELBO sees: the Tweedie estimate at t_eps.

    Draws ``x_{t_eps} ~ q(. | x0, y)`` and returns the data prediction
    ``x0_hat(x_{t_eps}, y, t_eps)`` of the score model (docs/method.md §4,
    §7). Stage 1 alone uses it as the decoder mean; a two-stage model maps
    it through the refiner, which is therefore trained on such inputs too.

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> sde = OUVESDE(GeometricGNS())
    >>> oracle = GaussianOracle(sde, c=0.5, s0=0.2)
    >>> y = torch.ones(1, 1, 64, 64, dtype=torch.complex64)
    >>> x0 = oracle.sample_x0(y, torch.Generator().manual_seed(0))
    >>> x0_hat = decoder_input(oracle, sde, x0, y)
    >>> bool((x0_hat - x0).abs().pow(2).mean() < (y - x0).abs().pow(2).mean())
    True
    """
    t_eps = torch.full((x0.shape[0],), sde.t_eps, device=x0.device)
    x_eps, _ = sde.perturb(x0, y, t_eps, generator)
    return sde.data_prediction(x_eps, y, t_eps, score_model(x_eps, y, t_eps))


def _decoder_mean(score_model, sde, x0, y, generator, decoder):
    x0_hat = decoder_input(score_model, sde, x0, y, generator)
    return x0_hat if decoder is None else decoder(x0_hat, y)


@torch.no_grad()
def negative_elbo(
    score_model,
    sde,
    x0,
    y,
    diffusion_samples=16,
    reconstruction_samples=4,
    decoder=None,
    decoder_variance=None,
    generator=None,
    mask=None,
    units="bits_per_dim",
):
    """Estimate -ELBO and its terms for each utterance of a batch.

    Arguments
    ---------
    score_model : callable
        ``score_model(x_t, y, t)`` -> score.
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    x0, y : torch.Tensor
        Clean and noisy compressed spectrograms (B, 1, F, T), complex.
    diffusion_samples : int
        Stratified draws of (t, z) per utterance for L_diff (even, >= 2).
    reconstruction_samples : int
        Draws of x_{t_eps} per utterance for L_rec (>= 1).
    decoder : callable, optional
        ``decoder(x0_hat, y)`` -> decoder mean (a refinement model); default
        the Tweedie estimate itself.
    decoder_variance : float, optional
        v of the Gaussian decoder; default sigma_{t_eps}^2 / a_{t_eps}^2.
    generator : torch.Generator, optional
        Source of randomness, on x0's device.
    mask : torch.Tensor, optional
        (B, 1, 1, T) valid frames of a padded batch.
    units : str
        ``"bits_per_dim"`` (default) or ``"nats"`` (per utterance).

    Returns
    -------
    ELBOTerms
    """
    if diffusion_samples < 2 or diffusion_samples % 2:
        raise ValueError(
            "diffusion_samples must be even and >= 2 (strata are paired to "
            f"estimate the standard error), got {diffusion_samples}."
        )
    if reconstruction_samples < 1:
        raise ValueError("reconstruction_samples must be >= 1.")
    if units not in ("bits_per_dim", "nats"):
        raise ValueError(f"units must be 'bits_per_dim' or 'nats': {units!r}")
    batch = x0.shape[0]
    frames = x0.shape[-1] if mask is None else mask.flatten(1).sum(-1)
    bins = x0.shape[1] * x0.shape[2] * frames

    prior = sde.prior_kl(
        x0 if mask is None else x0 * mask, y if mask is None else y * mask
    )

    span = sde.log_snr_span()
    diffusion = []
    for draw in range(diffusion_samples):
        strata = diffusion_samples // 2
        t = _stratified_time(sde, draw // 2, strata, batch, generator)
        t = t.to(x0.device)
        x_t, z = sde.perturb(x0, y, t, generator)
        sigma = expand_time(sde.std(t), x0)
        error = (sigma * score_model(x_t, y, t) + z).abs().pow(2)
        # (g^2 / sigma^2) / p(t) = Z for t ~ p
        diffusion.append(span * _bin_sum(error, mask))
    diffusion, diffusion_se = _stratified_mean_and_stderr(diffusion)

    if decoder_variance is None:
        t_eps = torch.tensor(sde.t_eps, device=x0.device)
        decoder_variance = (sde.variance(t_eps) / sde.decay(t_eps) ** 2).item()
    reconstruction = []
    for _ in range(reconstruction_samples):
        mean = _decoder_mean(score_model, sde, x0, y, generator, decoder)
        error = _bin_sum((x0 - mean).abs().pow(2), mask) / decoder_variance
        # -log CN(x0; m, v I) = |x0 - m|^2 / v + ln(pi v) per bin
        reconstruction.append(
            error + bins * math.log(math.pi * decoder_variance)
        )
    if reconstruction_samples > 1:
        reconstruction, reconstruction_se = _mean_and_stderr(reconstruction)
    else:
        reconstruction = reconstruction[0]
        reconstruction_se = torch.zeros_like(reconstruction)

    stderr = (diffusion_se**2 + reconstruction_se**2).sqrt()
    scale = 1.0 if units == "nats" else 1.0 / (2.0 * bins * math.log(2.0))
    return ELBOTerms(
        prior=prior * scale,
        diffusion=diffusion * scale,
        reconstruction=reconstruction * scale,
        stderr=stderr * scale,
        units=units,
    )


@torch.no_grad()
def fit_decoder_variance(
    score_model, sde, x0, y, decoder=None, generator=None, mask=None
):
    """Maximum-likelihood decoder variance v = mean |x0 - m|^2 per bin.

    Fit it on held-out data and pass it to :func:`negative_elbo` as
    ``decoder_variance`` to report a two-stage ELBO with a fitted decoder.

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> sde = OUVESDE(GeometricGNS())
    >>> oracle = GaussianOracle(sde, c=0.5, s0=0.2)
    >>> y = torch.ones(1, 1, 64, 64, dtype=torch.complex64)
    >>> g = torch.Generator().manual_seed(0)
    >>> x0 = oracle.sample_x0(y, g)
    >>> v = fit_decoder_variance(oracle, sde, x0, y, None, g)
    >>> 0.0 < v < 0.001
    True
    """
    mean = _decoder_mean(score_model, sde, x0, y, generator, decoder)
    error = (x0 - mean).abs().pow(2)
    if mask is None:
        return error.mean().item()
    weights = mask.expand_as(error)
    return ((error * weights).sum() / weights.sum()).item()


def fit_decoder_variances(score_model, sde, crops, decoders, seed=0):
    """Maximum-likelihood variances of several decoders on the same draws.

    The one fitting loop of the recipes' test
    (:class:`~speechbrain_elbo.brains.RefinerBrain`) and of the demo report:
    for each held-out crop, every decoder sees the same x_{t_eps} draw
    (a generator seeded with ``seed + index``), and each variance is the
    mean |x0 - m|^2 over all valid bins of all crops.

    Arguments
    ---------
    score_model, sde
        As in :func:`negative_elbo`.
    crops : iterable
        ``(x0, y, mask)`` triples (mask (B, 1, 1, T) or None).
    decoders : dict
        Name -> decoder (None: the Tweedie estimate of stage 1).
    seed : int
        Seed of the draws.

    Returns
    -------
    dict
        Name -> variance, and ``"crops"``: the number of crops (0: no
        variance fitted, the dict holds only ``"crops"``).

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> sde = OUVESDE(GeometricGNS())
    >>> oracle = GaussianOracle(sde, c=0.5, s0=0.2)
    >>> y = torch.ones(1, 1, 64, 64, dtype=torch.complex64)
    >>> x0 = oracle.sample_x0(y, torch.Generator().manual_seed(0))
    >>> fitted = fit_decoder_variances(
    ...     oracle, sde, [(x0, y, None)], {"a": None, "b": lambda m, y: m})
    >>> fitted["a"] == fitted["b"], fitted["crops"]
    (True, 1)
    """
    sums = dict.fromkeys(decoders, 0.0)
    bins, count = 0.0, 0
    for index, (x0, y, mask) in enumerate(crops):
        frames = x0.shape[-1] if mask is None else mask.sum().item()
        weight = float(frames) * x0.shape[1] * x0.shape[2]
        if mask is None:
            weight *= x0.shape[0]
        for name, decoder in decoders.items():
            generator = torch.Generator(device=x0.device).manual_seed(
                int(seed) + index
            )
            variance = fit_decoder_variance(
                score_model, sde, x0, y, decoder, generator, mask
            )
            sums[name] += variance * weight
        bins += weight
        count += 1
    if count == 0 or bins == 0:
        return {"crops": 0}
    return {**{name: sums[name] / bins for name in decoders}, "crops": count}
