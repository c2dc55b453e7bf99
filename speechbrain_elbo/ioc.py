"""Importance of Condition (IoC): how much x0_hat uses y (docs/method.md §6).

    IoC(t) = |J_y|_F^2 / (|J_y|_F^2 + |J_x|_F^2),
    J_y = d x0_hat(x_t, y, t) / d y,   J_x = d x0_hat(x_t, y, t) / d x_t,

with x0_hat the Tweedie data prediction and x_t ~ q(. | x0, y). The squared
Frobenius norms are estimated with Hutchinson probes, E_v |J v|^2 for complex
Gaussian v (real and imaginary parts independent; the same v probes both
Jacobians, so that the noise of the ratio partly cancels), the Jacobian-vector
products computed by central finite differences (any network, no autograd)
or by forward-mode automatic differentiation (``method="jvp"``).

Note that x0_hat depends on y also through the Tweedie formula itself (the
term -(1 - a_t) y / a_t), so a score network that ignores its y input still
has a non-zero IoC; the IoC is 0 only when the data prediction ignores y.

Example
-------
>>> from speechbrain_elbo.oracle import GaussianOracle
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> sde = OUVESDE(GeometricGNS())
>>> oracle = GaussianOracle(sde, c=0.5, s0=0.2)
>>> y = torch.ones(2, 1, 8, 8, dtype=torch.complex64)
>>> times = torch.tensor([0.03, 1.0])
>>> curve = ioc_curve(oracle, sde, oracle.sample_x0(y), y, times)
>>> exact = oracle.importance_of_condition(times)
>>> bool((curve["ioc"] - exact).abs().max() < 0.01)
True
"""

import torch

from speechbrain_elbo.sde import complex_noise

__all__ = ["importance_of_condition", "ioc_curve"]


def _jvp_finite_difference(fn, point, direction, step):
    # central difference (f(p + h v) - f(p - h v)) / (2 h)
    forward = fn(point + step * direction)
    backward = fn(point - step * direction)
    return (forward - backward) / (2.0 * step)


def _jvp_forward_mode(fn, point, direction):
    return torch.func.jvp(fn, (point,), (direction,))[1]


def _squared_norm(values, mask):
    values = values.abs().pow(2)
    if mask is not None:
        values = values * mask
    return values.flatten(1).sum(-1)


def importance_of_condition(
    score_model,
    sde,
    x0,
    y,
    t,
    probes=4,
    generator=None,
    method="fd",
    step=1e-3,
    mask=None,
):
    """Per-utterance IoC at one diffusion time, shape (B,).

    Arguments
    ---------
    score_model : callable
        ``score_model(x_t, y, t)`` -> score.
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    x0, y : torch.Tensor
        Clean and noisy compressed spectrograms (B, 1, F, T), complex.
    t : float
        The diffusion time.
    probes : int
        Hutchinson probes per Jacobian.
    generator : torch.Generator, optional
        Source of randomness (x_t and probes), on x0's device.
    method : str
        ``"fd"`` (central finite differences) or ``"jvp"`` (forward-mode AD).
    step : float
        Finite-difference step (``"fd"`` only).
    mask : torch.Tensor, optional
        (B, 1, 1, T) valid frames of a padded batch.

    Returns
    -------
    torch.Tensor
        IoC in [0, 1] for each utterance.
    """
    if method not in ("fd", "jvp"):
        raise ValueError(f"method must be 'fd' or 'jvp', got {method!r}.")
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}.")
    tb = torch.full((x0.shape[0],), float(t), device=x0.device)
    x_t, _ = sde.perturb(x0, y, tb, generator)

    def predict(x_state, y_cond):
        score = score_model(x_state, y_cond, tb)
        return sde.data_prediction(x_state, y_cond, tb, score)

    def jvp(fn, point, direction):
        if method == "jvp":
            return _jvp_forward_mode(fn, point, direction)
        return _jvp_finite_difference(fn, point, direction, step)

    norm_x = torch.zeros(x0.shape[0], device=x0.device)
    norm_y = torch.zeros_like(norm_x)
    for _ in range(probes):
        # one probe for both Jacobians: the ratio's noise partly cancels
        probe = complex_noise(x_t, generator)
        J_x = jvp(lambda x: predict(x, y), x_t, probe)
        J_y = jvp(lambda c: predict(x_t, c), y, probe)
        norm_x += _squared_norm(J_x, mask)
        norm_y += _squared_norm(J_y, mask)
    return norm_y / (norm_y + norm_x)


def ioc_curve(score_model, sde, x0, y, times, **options):
    """IoC averaged over utterances on a grid of diffusion times.

    Arguments
    ---------
    score_model, sde, x0, y
        As for :func:`importance_of_condition`.
    times : torch.Tensor
        Diffusion times (K,).
    **options
        Passed to :func:`importance_of_condition`.

    Returns
    -------
    dict
        ``t`` (K,), ``sigma`` (K,) = sigma_t, ``ioc`` (K,) mean over
        utterances, ``ioc_std`` (K,) their standard deviation (0 for one).
    """
    with torch.no_grad():
        per_time = [
            importance_of_condition(
                score_model, sde, x0, y, float(t), **options
            )
            for t in times
        ]
    values = torch.stack(per_time)
    spread = values.std(dim=1) if values.shape[1] > 1 else values[:, 0] * 0
    return {
        "t": times.detach().cpu(),
        "sigma": sde.std(times.detach().cpu().float()),
        "ioc": values.mean(dim=1).detach().cpu(),
        "ioc_std": spread.detach().cpu(),
    }
