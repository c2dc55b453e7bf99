"""Noise schedules (GNS) and the OUVE SDE of SGMSE+ (docs/method.md §2).

The forward process, per complex bin, with y the noisy spectrogram, is

    dx = gamma (y - x) dt + g(t) dw.

A GNS fixes the diffusion coefficient g(t) and, with the stiffness gamma,
the closed-form marginal variance sigma_t^2. The SDE class gathers the
marginal (perturbation kernel), the prior, the forward and reverse drifts and
the data prediction, all computed in float32.

Complex noise has E|z|^2 = 1 per bin (real and imaginary parts each of
variance 1/2), which is what ``torch.randn`` gives for complex dtypes.

Example
-------
>>> sde = OUVESDE(GeometricGNS(sigma_min=0.05, sigma_max=0.5), gamma=1.5)
>>> t = torch.tensor([0.03, 1.0])
>>> sde.std(t)
tensor([0.0188, 0.3890])
"""

import math

import torch

__all__ = ["GeometricGNS", "OUVESDE", "complex_noise", "expand_time"]


class GeometricGNS:
    """Geometric GNS of SGMSE+: g(t) = s_min (s_max/s_min)^t sqrt(2 L).

    Its two free parameters, the minimum and maximum noise scale, are what the
    ELBO depends on (docs/method.md §2): sigma_max sets the prior mismatch at T
    and sigma_min (with t_eps) the reconstruction term.

    Any other schedule fits the SDE if it offers the same three methods:
    ``diffusion(t)``, ``variance(t, gamma)`` (the closed-form marginal
    variance of the OU process driven by that g) and ``describe()``.

    Arguments
    ---------
    sigma_min : float
        Minimum noise scale, > 0.
    sigma_max : float
        Maximum noise scale, > sigma_min.

    Example
    -------
    >>> gns = GeometricGNS(0.05, 0.5)
    >>> round(gns.log_ratio, 6)
    2.302585
    >>> gns.diffusion(torch.tensor([0.0]))
    tensor([0.1073])
    """

    def __init__(self, sigma_min=0.05, sigma_max=0.5):
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(
                "Need 0 < sigma_min < sigma_max, got "
                f"sigma_min={sigma_min}, sigma_max={sigma_max}."
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def diffusion(self, t):
        """Diffusion coefficient g(t)."""
        # g(t) = sigma_min (sigma_max/sigma_min)^t sqrt(2 L)
        L = self.log_ratio
        return self.sigma_min * torch.exp(L * t) * math.sqrt(2.0 * L)

    def variance(self, t, gamma):
        """Marginal variance sigma_t^2 of the OU process of stiffness gamma."""
        # sigma_t^2 = s_min^2 (e^{2Lt} - e^{-2 gamma t}) L / (gamma + L)
        L = self.log_ratio
        growth = torch.exp(2.0 * L * t) - torch.exp(-2.0 * gamma * t)
        return self.sigma_min**2 * growth * L / (gamma + L)

    def describe(self):
        """A dict of the schedule's parameters, for logs and model cards."""
        return {
            "gns": "geometric",
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
        }

    def __repr__(self):
        return (
            f"GeometricGNS(sigma_min={self.sigma_min}, "
            f"sigma_max={self.sigma_max})"
        )


class OUVESDE:
    """Ornstein-Uhlenbeck variance-exploding SDE (docs/method.md §2).

    Arguments
    ---------
    gns : GeometricGNS
        The Gaussian noise schedule (any object with the same interface).
    gamma : float
        Stiffness of the drift towards y.
    t_eps : float
        Smallest diffusion time used in training and sampling.
    T : float
        Final diffusion time.

    Example
    -------
    >>> sde = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)
    >>> x0 = torch.zeros(1, 1, 2, 3, dtype=torch.complex64)
    >>> y = torch.ones_like(x0)
    >>> t = torch.tensor([1.0])
    >>> sde.mean(x0, y, t)[0, 0, 0, 0]
    tensor(0.7769+0.j)
    >>> xt, z = sde.perturb(x0, y, t, torch.Generator().manual_seed(0))
    >>> xt.shape, z.dtype
    (torch.Size([1, 1, 2, 3]), torch.complex64)
    """

    def __init__(self, gns, gamma=1.5, t_eps=0.03, T=1.0):
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}.")
        if not 0.0 < t_eps < T:
            raise ValueError(f"Need 0 < t_eps < T, got t_eps={t_eps}, T={T}.")
        self.gns = gns
        self.gamma = float(gamma)
        self.t_eps = float(t_eps)
        self.T = float(T)

    # -- marginal q(x_t | x0, y) ------------------------------------------
    def decay(self, t):
        """a_t = exp(-gamma t), the weight of x0 in the marginal mean."""
        return torch.exp(-self.gamma * t)

    def variance(self, t):
        """Marginal variance sigma_t^2."""
        return self.gns.variance(t, self.gamma)

    def std(self, t):
        """Marginal standard deviation sigma_t."""
        return self.variance(t).sqrt()

    def mean(self, x0, y, t):
        """Marginal mean mu_t = a_t x0 + (1 - a_t) y."""
        a = expand_time(self.decay(t), x0)
        return a * x0 + (1.0 - a) * y

    def snr(self, t):
        """Signal-to-noise ratio a_t^2 / sigma_t^2 of r_t = x_t - y."""
        return self.decay(t) ** 2 / self.variance(t)

    def perturb(self, x0, y, t, generator=None):
        """Sample x_t ~ q(x_t | x0, y): returns (mu + sigma z, z)."""
        z = complex_noise(x0, generator)
        sigma = expand_time(self.std(t), x0)
        return self.mean(x0, y, t) + sigma * z, z

    # -- prior ------------------------------------------------------------
    def prior_sample(self, y, generator=None):
        """x_T ~ CN(y, sigma_T^2 I)."""
        sigma_T = self.std(torch.tensor(self.T, device=y.device))
        return y + sigma_T * complex_noise(y, generator)

    def prior_kl(self, x0, y):
        """KL(q(x_T | x0, y) || CN(y, sigma_T^2)) in nats, per utterance."""
        T = torch.tensor(self.T, device=x0.device)
        # L_prior = (a_T^2 / sigma_T^2) |x0 - y|^2
        return self.snr(T) * (x0 - y).abs().pow(2).flatten(1).sum(-1)

    # -- forward and reverse dynamics -------------------------------------
    def drift(self, x, y, t):
        """Forward drift f = gamma (y - x)."""
        return self.gamma * (y - x)

    def diffusion(self, t):
        """Diffusion coefficient g(t)."""
        return self.gns.diffusion(t)

    def reverse_drift(self, x, y, t, score):
        """Reverse-SDE drift f - g^2 s (to be integrated backwards in time)."""
        g = expand_time(self.diffusion(t), x)
        return self.drift(x, y, t) - g**2 * score

    def probability_flow_drift(self, x, y, t, score):
        """Probability-flow ODE drift f - g^2 s / 2."""
        g = expand_time(self.diffusion(t), x)
        return self.drift(x, y, t) - 0.5 * g**2 * score

    def data_prediction(self, x_t, y, t, score):
        """Tweedie estimate x0_hat = (x_t - (1 - a_t) y + sigma_t^2 s) / a_t."""
        a = expand_time(self.decay(t), x_t)
        var = expand_time(self.variance(t), x_t)
        return (x_t - (1.0 - a) * y + var * score) / a

    # -- time sampling ----------------------------------------------------
    def sample_time(self, batch_size, device=None, generator=None):
        """t ~ U[t_eps, T], shape (batch_size,)."""
        u = torch.rand(batch_size, device=device, generator=generator)
        return self.t_eps + (self.T - self.t_eps) * u

    def log_snr_span(self):
        """Integral of g^2/sigma^2 over [t_eps, T]: the importance weight.

        Since d(sigma^2)/dt = -2 gamma sigma^2 + g^2, the density g^2/sigma^2
        integrates to W(t) = ln sigma_t^2 + 2 gamma t = -log SNR(t) + const,
        so sampling t proportionally to g^2/sigma^2 is sampling uniformly in
        log SNR.
        """
        ends = torch.tensor([self.t_eps, self.T], dtype=torch.float64)
        W = self._cumulative_weight(ends)
        return float(W[1] - W[0])

    def _cumulative_weight(self, t):
        # W(t) = ln sigma_t^2 + 2 gamma t, an antiderivative of g^2 / sigma^2
        return torch.log(self.variance(t)) + 2.0 * self.gamma * t

    def importance_time(self, u, iterations=60):
        """Inverse CDF of the density g^2 / (sigma^2 Z) on [t_eps, T].

        Maps u in [0, 1] (any shape) to t by bisection on the cumulative
        weight (vectorised, float64), so that it works for any GNS with a
        closed-form variance.
        """
        ends = torch.tensor([self.t_eps, self.T], dtype=torch.float64)
        W_lo, W_hi = self._cumulative_weight(ends).tolist()
        target = W_lo + u.detach().cpu().double() * (W_hi - W_lo)
        lo = torch.full_like(target, self.t_eps)
        hi = torch.full_like(target, self.T)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            below = self._cumulative_weight(mid) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return (0.5 * (lo + hi)).float().to(u.device)

    def sample_time_importance(self, batch_size, device=None, generator=None):
        """t with density g^2(t) / (sigma_t^2 Z) on [t_eps, T], shape (B,).

        The matching importance weight g^2 / (sigma^2 p(t)) is the constant
        Z = :meth:`log_snr_span`.
        """
        source = "cpu" if generator is None else generator.device
        u = torch.rand(batch_size, generator=generator, device=source)
        return self.importance_time(u).to(device)

    def describe(self):
        """A dict of every parameter, for logs and model cards."""
        return {
            **self.gns.describe(),
            "gamma": self.gamma,
            "t_eps": self.t_eps,
            "T": self.T,
        }

    def __repr__(self):
        return (
            f"OUVESDE({self.gns!r}, gamma={self.gamma}, t_eps={self.t_eps}, "
            f"T={self.T})"
        )


def complex_noise(like, generator=None):
    """Standard complex Gaussian noise shaped like ``like`` (E|z|^2 = 1).

    Arguments
    ---------
    like : torch.Tensor
        Gives the shape and device.
    generator : torch.Generator or list of torch.Generator, optional
        The source of the draws; a list has one generator per item of the
        batch (``like.shape[0]``), each item drawn from its own, so that an
        item's noise does not depend on its batch neighbours. Item ``i``
        gets the draws a batch of one would get from ``generator[i]``.

    Example
    -------
    >>> z = complex_noise(torch.zeros(100000, dtype=torch.complex64))
    >>> bool(abs(z.abs().pow(2).mean() - 1.0) < 0.02)
    True
    >>> gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    >>> pair = complex_noise(torch.zeros(2, 3), gens)
    >>> alone = torch.Generator().manual_seed(2)
    >>> torch.equal(pair[1:], complex_noise(torch.zeros(1, 3), alone))
    True
    """
    if isinstance(generator, list | tuple):
        if len(generator) != like.shape[0]:
            raise ValueError(
                f"{len(generator)} generators for a batch of {like.shape[0]}: "
                "pass one generator per item."
            )
        pairs = zip(like, generator, strict=True)
        return torch.stack([complex_noise(item, gen) for item, gen in pairs])
    return torch.randn(
        like.shape,
        dtype=torch.complex64,
        device=like.device,
        generator=generator,
    )


def expand_time(values, like):
    """Reshape per-example values (B,) (or a scalar) to broadcast over ``like``.

    Example
    -------
    >>> expand_time(torch.tensor([1.0, 2.0]), torch.zeros(2, 1, 3, 4)).shape
    torch.Size([2, 1, 1, 1])
    """
    if values.dim() == 0:
        return values
    return values.reshape(-1, *([1] * (like.dim() - 1)))
