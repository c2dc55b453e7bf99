"""The analytic Gaussian oracle of docs/method.md §6.

If x0 | y ~ CN(c y, s0^2 I) per bin, every quantity of the method has a
closed form: the marginal x_t | y ~ CN(k_t y, V_t I) with
k_t = 1 - a_t (1 - c) and V_t = a_t^2 s0^2 + sigma_t^2, its exact score, the
posterior mean, the Jacobians of the data prediction (hence the IoC), and the
exact negative log-likelihood. It behaves like a trained score model
(``oracle(x_t, y, t)``), so samplers, losses, the ELBO and the IoC can be
checked against it.

Example
-------
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> oracle = GaussianOracle(OUVESDE(GeometricGNS()), c=0.5, s0=0.2)
>>> t = torch.tensor([0.03, 1.0])
>>> oracle.importance_of_condition(t)
tensor([0.0015, 0.9834])
"""

import math

import torch

from speechbrain_elbo.sde import complex_noise, expand_time

__all__ = ["GaussianOracle"]


class GaussianOracle(torch.nn.Module):
    """Exact score of the Gaussian toy model x0 | y ~ CN(c y, s0^2 I).

    Arguments
    ---------
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    c : float
        Mean gain: E[x0 | y] = c y.
    s0 : float
        Standard deviation of x0 | y per complex bin (E|x0 - c y|^2 = s0^2).

    Example
    -------
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> oracle = GaussianOracle(OUVESDE(GeometricGNS()), c=0.5, s0=0.2)
    >>> y = torch.ones(1, 1, 2, 2, dtype=torch.complex64)
    >>> x0 = oracle.sample_x0(y, torch.Generator().manual_seed(0))
    >>> oracle.nll(x0, y).shape
    torch.Size([1])
    """

    def __init__(self, sde, c=0.5, s0=0.2):
        super().__init__()
        if s0 <= 0:
            raise ValueError(f"s0 must be positive, got {s0}.")
        self.sde = sde
        self.c = float(c)
        self.s0 = float(s0)

    def gain(self, t):
        """k_t = 1 - a_t (1 - c): E[x_t | y] = k_t y."""
        return 1.0 - self.sde.decay(t) * (1.0 - self.c)

    def marginal_variance(self, t):
        """V_t = a_t^2 s0^2 + sigma_t^2, the variance of x_t | y."""
        return self.sde.decay(t) ** 2 * self.s0**2 + self.sde.variance(t)

    def forward(self, x_t, y, t):
        """Exact score -(x_t - k_t y) / V_t."""
        k = expand_time(self.gain(t), x_t)
        V = expand_time(self.marginal_variance(t), x_t)
        return -(x_t - k * y) / V

    def posterior_mean(self, x_t, y, t):
        """E[x0 | x_t, y] = c y + a_t s0^2 (x_t - k_t y) / V_t."""
        a = expand_time(self.sde.decay(t), x_t)
        k = expand_time(self.gain(t), x_t)
        V = expand_time(self.marginal_variance(t), x_t)
        return self.c * y + a * self.s0**2 * (x_t - k * y) / V

    def jacobians(self, t):
        """Per-bin derivatives (J_x, J_y) of the exact x0_hat(x_t, y, t)."""
        a = self.sde.decay(t)
        V = self.marginal_variance(t)
        J_x = a * self.s0**2 / V
        J_y = (self.sde.variance(t) * self.gain(t) / V - (1.0 - a)) / a
        return J_x, J_y

    def importance_of_condition(self, t):
        """Exact IoC(t) = J_y^2 / (J_y^2 + J_x^2)."""
        J_x, J_y = self.jacobians(t)
        return J_y**2 / (J_y**2 + J_x**2)

    def sample_x0(self, y, generator=None):
        """Draw x0 ~ CN(c y, s0^2 I)."""
        return self.c * y + self.s0 * complex_noise(y, generator)

    def sample_marginal(self, y, t, generator=None):
        """Draw x_t ~ CN(k_t y, V_t I), the exact marginal given y."""
        k = expand_time(self.gain(t), y)
        V = expand_time(self.marginal_variance(t), y)
        return k * y + V.sqrt() * complex_noise(y, generator)

    def nll(self, x0, y):
        """Exact -log p(x0 | y) in nats, summed per utterance (B,)."""
        # |x0 - c y|^2 / s0^2 + ln(pi s0^2) per complex bin
        err = (x0 - self.c * y).abs().pow(2) / self.s0**2
        bins = x0[0].numel()
        return err.flatten(1).sum(-1) + bins * math.log(math.pi * self.s0**2)
