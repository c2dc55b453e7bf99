"""Training losses of the two stages (docs/method.md, sections 4 and 7).

Stage 1, the score model, has three losses selectable by name
(:func:`build_score_loss`, docs/method.md, section 4).

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

Stage 2, the refiner, has the data-domain :class:`RefinementLoss`
(docs/method.md, section 7).

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
    "build_score_loss",
    "RefinementLoss",
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


def build_score_loss(
    name,
    sde,
    transform=None,
    importance_sampling=True,
    time_l1_weight=0.0,
):
    """The stage-1 loss selected by name, with only its own options.

    What the recipes' YAML files call (``loss_fn: !apply:...``): every option
    is a YAML key, and one that does not apply to the chosen loss is an
    error rather than silently ignored.

    Arguments
    ---------
    name : str
        ``"sigma2"``, ``"likelihood"`` or ``"data_prediction"``.
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    transform : speechbrain_elbo.spectral.SpectralTransform, optional
        Needed by ``"data_prediction"`` when ``time_l1_weight > 0``.
    importance_sampling : bool
        ``"likelihood"`` only: draw t uniformly in log SNR.
    time_l1_weight : float
        ``"data_prediction"`` only: weight of the waveform L1 term.

    Returns
    -------
    callable
        ``loss(score_model, x0, y, generator=None, mask=None)``.

    Example
    -------
    >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
    >>> sde = OUVESDE(GeometricGNS())
    >>> build_score_loss("likelihood", sde).importance_sampling
    True
    >>> build_score_loss("sigma2", sde, time_l1_weight=0.5)
    Traceback (most recent call last):
    ...
    ValueError: time_l1_weight=0.5 only applies to loss 'data_prediction'...
    """
    if name != "data_prediction" and time_l1_weight:
        raise ValueError(
            f"time_l1_weight={time_l1_weight} only applies to loss "
            f"'data_prediction', not {name!r}; set it to 0."
        )
    if name == "likelihood":
        return make_loss(name, sde, importance_sampling=importance_sampling)
    if name == "data_prediction":
        return make_loss(
            name, sde, time_l1_weight=time_l1_weight, transform=transform
        )
    return make_loss(name, sde)


class RefinementLoss:
    """Data-domain loss of the refinement model (docs/method.md, section 7).

    ``spec_weight |r - x0|^2 + mag_weight (|r| - |x0|)^2`` averaged over the
    valid complex bins of the compressed spectrograms, plus
    ``time_weight`` times the mean absolute error of the decoded waveforms.

    With ``relative=True`` and the refiner's input ``x_hat`` passed as
    ``reference``, the spectrogram term is the share of the input's error
    that the refiner leaves, ``sum |r - x0|^2 / sum |x_hat - x0|^2``, summed
    over the examples of each group (``groups``: the kind of input, e.g.
    sampler output or ELBO decoder input) and averaged over the groups: the
    two kinds then weigh alike although the decoder inputs' errors are an
    order of magnitude smaller, and within a kind the examples keep their
    absolute weights (docs/method.md, section 7). A ratio of 1 is the
    identity. The waveform term is then relative too, ``sum |w_r - w_0| /
    sum |w_in - w_0|``. In both modes it judges the examples of
    ``time_examples`` (the refiner recipe passes its sampler outputs in
    training, since the ELBO's decoder is judged by the spectrogram error
    alone).

    Arguments
    ---------
    transform : speechbrain_elbo.spectral.SpectralTransform
        Decodes spectrograms for the time-domain term.
    spec_weight : float
        Weight of the compressed complex spectrogram MSE.
    mag_weight : float
        Weight of the compressed magnitude MSE.
    time_weight : float
        Weight of the waveform L1 term.
    relative : bool
        Divide the spectrogram term of each group by its inputs' error
        (needs ``reference`` in the call).

    Example
    -------
    >>> from speechbrain_elbo.spectral import SpectralTransform
    >>> loss = RefinementLoss(SpectralTransform(), 1.0, 1.0, 0.0)
    >>> x0 = torch.ones(1, 1, 256, 4, dtype=torch.complex64)
    >>> round(loss(x0 * 1j, x0).item(), 4)  # |i - 1|^2 = 2, same magnitude
    2.0
    >>> relative = RefinementLoss(SpectralTransform(), relative=True)
    >>> x_hat = x0 * 1.2  # the input's error: 0.04 per bin
    >>> round(relative(x0 * 1.1, x0, reference=x_hat).item(), 4)  # 0.01/0.04
    0.25
    >>> two = torch.cat([x0, x0])  # inputs' errors 0.04 and 4e-4 per bin
    >>> ref = two * torch.tensor([1.2, 1.02]).view(2, 1, 1, 1)
    >>> out = two * torch.tensor([1.1, 1.0]).view(2, 1, 1, 1)
    >>> round(relative(out, two, reference=ref).item(), 4)  # 0.01 / 0.0404
    0.2475
    >>> kinds = torch.tensor([0, 1])  # (0.01 / 0.04 + 0 / 4e-4) / 2
    >>> round(relative(out, two, reference=ref, groups=kinds).item(), 4)
    0.125
    """

    def __init__(
        self,
        transform,
        spec_weight=1.0,
        mag_weight=0.0,
        time_weight=0.0,
        relative=False,
    ):
        weights = {
            "spec_weight": spec_weight,
            "mag_weight": mag_weight,
            "time_weight": time_weight,
        }
        for key, value in weights.items():
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}.")
        if not any(weights.values()):
            raise ValueError(
                "RefinementLoss needs at least one positive weight among "
                "spec_weight, mag_weight and time_weight."
            )
        self.transform = transform
        self.spec_weight = float(spec_weight)
        self.mag_weight = float(mag_weight)
        self.time_weight = float(time_weight)
        self.relative = bool(relative)

    def __call__(
        self,
        estimate,
        target,
        mask=None,
        reference=None,
        groups=None,
        time_examples=None,
    ):
        """Loss of complex (B, 1, F, T) spectrograms; mask (B, 1, 1, T);
        ``reference``: the refiner's input (needed when ``relative``);
        ``groups``: (B,) integer labels of the examples' kinds (default:
        one group); ``time_examples``: (B,) bool, the examples the waveform
        term judges (default all)."""
        if self.relative and reference is None:
            raise ValueError(
                "RefinementLoss(relative=True) divides by the input's error: "
                "pass the refiner's input as reference=."
            )
        loss = estimate.real.new_zeros(())
        if self.spec_weight and self.relative:
            error = (estimate - target).abs().pow(2)
            base = (reference - target).abs().pow(2).detach()
            if mask is not None:
                error, base = error * mask, base * mask
            error, base = error.flatten(1).sum(-1), base.flatten(1).sum(-1)
            if groups is None:
                groups = torch.zeros_like(error, dtype=torch.long)
            ratios = [
                error[groups == g].sum() / base[groups == g].sum().clamp(1e-12)
                for g in torch.unique(groups)
            ]
            loss = loss + self.spec_weight * torch.stack(ratios).mean()
        elif self.spec_weight:
            error = (estimate - target).abs().pow(2)
            loss = loss + self.spec_weight * masked_mean(error, mask)
        if self.mag_weight:
            error = (estimate.abs() - target.abs()).pow(2)
            loss = loss + self.mag_weight * masked_mean(error, mask)
        keep = slice(None) if time_examples is None else time_examples
        if self.time_weight and target[keep].shape[0]:
            if mask is not None:
                estimate, target = estimate * mask, target * mask
                if reference is not None:
                    reference = reference * mask
            length = (target.shape[-1] - 1) * self.transform.hop_length
            clean = self.transform.decode(target[keep], length)
            error = self.transform.decode(estimate[keep], length) - clean
            if self.relative:
                base = self.transform.decode(reference[keep], length) - clean
                term = error.abs().sum() / base.abs().sum().detach().clamp(
                    1e-12
                )
                loss = loss + self.time_weight * term
            else:
                loss = loss + self.time_weight * error.abs().mean()
        return loss
