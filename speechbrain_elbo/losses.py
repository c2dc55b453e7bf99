"""Training losses of the score model, selectable by name (METHOD.md s. 4).

All three draw a diffusion time t and a noisy state x_t ~ q(x_t | x0, y),
evaluate the score model once, and return a scalar averaged over complex bins
(and over the valid frames of a padded batch):

- ``"sigma2"``: SGMSE+'s loss E_t E_z |sigma_t s + z|^2 with t ~ U[t_eps, T],
  i.e. the weighting lambda(t) = sigma_t^2 on the score error;
- ``"likelihood"``: the ELBO weighting g(t)^2, an unbiased estimate of the
  diffusion term L_diff per bin; by default t is drawn with density
  proportional to g^2/sigma^2 (uniform in log SNR), whose importance weight
  is a constant, which keeps the variance down;
- ``"data_prediction"``: |x0_hat - x0|^2 on the compressed spectrogram, with
  x0_hat the Tweedie estimate, plus an optional time-domain L1 term.

Example
-------
>>> from speechbrain_elbo.oracle import GaussianOracle
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> sde = OUVESDE(GeometricGNS(0.05, 0.5))
>>> loss = make_loss("likelihood", sde)
>>> y = torch.ones(2, 1, 8, 8, dtype=torch.complex64)
>>> oracle = GaussianOracle(sde, c=0.5, s0=0.2)
>>> value = loss(oracle, oracle.sample_x0(y), y)
>>> value.shape, bool(value > 0)
(torch.Size([]), True)
"""

import torch

from speechbrain_elbo.sde import expand_time

__all__ = [
    "SigmaSquaredLoss",
    "LikelihoodLoss",
    "DataPredictionLoss",
    "LOSSES",
    "make_loss",
    "masked_mean",
]


def masked_mean(values, mask=None):
    """Mean of (B, C, F, T) values over the frames where ``mask`` is 1.

    Arguments
    ---------
    values : torch.Tensor
        Real values, shape (B, C, F, T).
    mask : torch.Tensor, optional
        Shape (B, 1, 1, T), e.g. from
        :func:`speechbrain_elbo.spectral.frame_mask`.

    Example
    -------
    >>> v = torch.tensor([[[[1.0, 3.0]]]])
    >>> masked_mean(v), masked_mean(v, torch.tensor([[[[1.0, 0.0]]]]))
    (tensor(2.), tensor(1.))
    """
    if mask is None:
        return values.mean()
    weights = mask.expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


class SigmaSquaredLoss:
    """SGMSE+'s denoising score matching loss (lambda(t) = sigma_t^2).

    Arguments
    ---------
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> sde = OUVESDE(GeometricGNS())
    >>> y = torch.zeros(1, 1, 4, 4, dtype=torch.complex64)
    >>> SigmaSquaredLoss(sde)(GaussianOracle(sde), y, y).dim()
    0
    """

    def __init__(self, sde):
        self.sde = sde

    def __call__(self, score_model, x0, y, generator=None, mask=None):
        """Loss for one batch; ``mask`` (B, 1, 1, T) marks valid frames."""
        t = self.sde.sample_time(x0.shape[0], x0.device, generator)
        x_t, z = self.sde.perturb(x0, y, t, generator)
        sigma = expand_time(self.sde.std(t), x0)
        score = score_model(x_t, y, t)
        # L_sigma^2 = E |sigma_t s + z|^2
        return masked_mean((sigma * score + z).abs().pow(2), mask)


class LikelihoodLoss:
    """ELBO-weighted score matching: an unbiased estimate of L_diff per bin.

    L_diff = int_{t_eps}^{T} (g^2 / sigma^2) E|sigma s + z|^2 dt.

    Arguments
    ---------
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    importance_sampling : bool
        Draw t with density g^2/sigma^2 (uniform in log SNR; constant
        weight) instead of uniformly on [t_eps, T].

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> sde = OUVESDE(GeometricGNS())
    >>> y = torch.zeros(1, 1, 4, 4, dtype=torch.complex64)
    >>> loss = LikelihoodLoss(sde, importance_sampling=False)
    >>> loss(GaussianOracle(sde), y, y).dim()
    0
    """

    def __init__(self, sde, importance_sampling=True):
        self.sde = sde
        self.importance_sampling = importance_sampling

    def sample_time(self, batch_size, device, generator=None):
        """Diffusion times (B,) and their importance weights (B,)."""
        sde = self.sde
        if self.importance_sampling:
            t = sde.sample_time_importance(batch_size, device, generator)
            # weight g^2 / (sigma^2 p(t)) = Z, constant
            return t, torch.full_like(t, sde.log_snr_span())
        t = sde.sample_time(batch_size, device, generator)
        weight = sde.diffusion(t) ** 2 / sde.variance(t)
        return t, (sde.T - sde.t_eps) * weight

    def __call__(self, score_model, x0, y, generator=None, mask=None):
        """Loss for one batch; ``mask`` (B, 1, 1, T) marks valid frames."""
        t, weight = self.sample_time(x0.shape[0], x0.device, generator)
        x_t, z = self.sde.perturb(x0, y, t, generator)
        sigma = expand_time(self.sde.std(t), x0)
        score = score_model(x_t, y, t)
        error = (sigma * score + z).abs().pow(2)
        return masked_mean(expand_time(weight, x0) * error, mask)


class DataPredictionLoss:
    """|x0_hat - x0|^2 on compressed spectrograms, plus optional time L1.

    Arguments
    ---------
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    time_l1_weight : float
        Weight of the mean absolute waveform error (0 disables it).
    transform : speechbrain_elbo.spectral.SpectralTransform, optional
        Needed when ``time_l1_weight > 0``, to decode both spectrograms.

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> from speechbrain_elbo.spectral import SpectralTransform
    >>> sde = OUVESDE(GeometricGNS())
    >>> loss = DataPredictionLoss(sde, 0.1, SpectralTransform())
    >>> y = torch.zeros(1, 1, 256, 4, dtype=torch.complex64)
    >>> loss(GaussianOracle(sde), y, y).dim()
    0
    """

    def __init__(self, sde, time_l1_weight=0.0, transform=None):
        if time_l1_weight < 0:
            raise ValueError(f"time_l1_weight must be >= 0: {time_l1_weight}")
        if time_l1_weight > 0 and transform is None:
            raise ValueError(
                "DataPredictionLoss with time_l1_weight > 0 needs the "
                "SpectralTransform (transform=...) to decode waveforms."
            )
        self.sde = sde
        self.time_l1_weight = time_l1_weight
        self.transform = transform

    def __call__(self, score_model, x0, y, generator=None, mask=None):
        """Loss for one batch; ``mask`` (B, 1, 1, T) marks valid frames."""
        t = self.sde.sample_time(x0.shape[0], x0.device, generator)
        x_t, _ = self.sde.perturb(x0, y, t, generator)
        score = score_model(x_t, y, t)
        x0_hat = self.sde.data_prediction(x_t, y, t, score)
        loss = masked_mean((x0_hat - x0).abs().pow(2), mask)
        if self.time_l1_weight > 0:
            length = (x0.shape[-1] - 1) * self.transform.hop_length
            if mask is not None:
                x0_hat, x0 = x0_hat * mask, x0 * mask
            estimate = self.transform.decode(x0_hat, length)
            target = self.transform.decode(x0, length)
            loss = loss + self.time_l1_weight * (estimate - target).abs().mean()
        return loss


LOSSES = {
    "sigma2": SigmaSquaredLoss,
    "likelihood": LikelihoodLoss,
    "data_prediction": DataPredictionLoss,
}


def make_loss(name, sde, **options):
    """Build a loss by name.

    Names: ``"sigma2"``, ``"likelihood"``, ``"data_prediction"``.

    Example
    -------
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> make_loss("sigma2", OUVESDE(GeometricGNS())).__class__.__name__
    'SigmaSquaredLoss'
    """
    if name not in LOSSES:
        raise ValueError(
            f"Unknown loss {name!r}; choose one of {sorted(LOSSES)}."
        )
    return LOSSES[name](sde, **options)
