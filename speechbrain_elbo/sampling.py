"""Reverse-time samplers over a score model (docs/method.md §5).

Each sampler is a short function of (score_model, sde, y) that integrates the
reverse process from T to 0 on the grid ``linspace(T, t_eps, N)`` followed by
a last step from t_eps to 0, and returns ``(estimate, nfe)``: the enhanced
compressed spectrogram (the noise-free mean of the last step) and the number
of score-network evaluations. Everything is batched; randomness comes only
from the given ``torch.Generator``, so the same generator state gives the
same output on the same device.

- :func:`sample_pc`: reverse-diffusion predictor + annealed Langevin corrector
  (SGMSE+'s default: N = 30, one corrector step, r = 0.5, NFE = 60);
- :func:`sample_euler`, :func:`sample_heun`: the probability-flow ODE,
  deterministic given y (and the prior sample).

Example
-------
>>> from speechbrain_elbo.oracle import GaussianOracle
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> sde = OUVESDE(GeometricGNS())
>>> y = torch.ones(2, 1, 4, 4, dtype=torch.complex64)
>>> x, nfe = sample_pc(GaussianOracle(sde), sde, y, steps=30)
>>> x.shape, nfe
(torch.Size([2, 1, 4, 4]), 60)
"""

import math
import numbers

import torch

from speechbrain_elbo.sde import complex_noise, expand_time

__all__ = [
    "time_grid",
    "reverse_diffusion_step",
    "langevin_step",
    "euler_step",
    "heun_step",
    "sample_pc",
    "sample_euler",
    "sample_heun",
    "SAMPLERS",
    "Sampler",
]


def time_grid(sde, steps, device=None):
    """linspace(T, t_eps, steps) followed by 0: ``steps`` intervals.

    Example
    -------
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> time_grid(OUVESDE(GeometricGNS(), t_eps=0.1), 4)
    tensor([1.0000, 0.7000, 0.4000, 0.1000, 0.0000])
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    grid = torch.linspace(sde.T, sde.t_eps, steps, device=device)
    if steps == 1:
        grid = torch.tensor([sde.T], device=device)
    return torch.cat([grid, grid.new_zeros(1)])


def _batch_time(t, x):
    return t.expand(x.shape[0])


def reverse_diffusion_step(score_model, sde, x, y, t, t_next, generator):
    """Predictor: x <- x - (f - g^2 s) dt + g sqrt(dt) z, dt = t - t_next.

    Returns the new state and its noise-free mean.
    """
    tb = _batch_time(t, x)
    dt = t - t_next
    score = score_model(x, y, tb)
    mean = x - sde.reverse_drift(x, y, tb, score) * dt
    g = expand_time(sde.diffusion(tb), x)
    return mean + g * dt.sqrt() * complex_noise(x, generator), mean


def langevin_step(score_model, sde, x, y, t, snr, generator):
    """Annealed Langevin corrector: eps = 2 (r sigma_t)^2,
    x <- x + eps s + sqrt(2 eps) z.
    """
    tb = _batch_time(t, x)
    score = score_model(x, y, tb)
    eps = expand_time(2.0 * (snr * sde.std(tb)) ** 2, x)
    return x + eps * score + (2.0 * eps).sqrt() * complex_noise(x, generator)


def euler_step(score_model, sde, x, y, t, t_next):
    """Probability-flow ODE, Euler: x <- x - v(x, t) (t - t_next)."""
    tb = _batch_time(t, x)
    velocity = sde.probability_flow_drift(x, y, tb, score_model(x, y, tb))
    return x - velocity * (t - t_next)


def heun_step(score_model, sde, x, y, t, t_next):
    """Probability-flow ODE, Heun (2nd order, trapezoidal correction)."""
    tb, tb_next = _batch_time(t, x), _batch_time(t_next, x)
    dt = t - t_next
    v = sde.probability_flow_drift(x, y, tb, score_model(x, y, tb))
    x_euler = x - v * dt
    v_next = sde.probability_flow_drift(
        x_euler, y, tb_next, score_model(x_euler, y, tb_next)
    )
    return x - 0.5 * (v + v_next) * dt


def _start(sde, y, x_T, generator):
    if x_T is not None:
        return x_T
    return sde.prior_sample(y, generator)


def _steps(grid, progress, description):
    pairs = list(zip(grid[:-1], grid[1:], strict=True))
    if progress:
        from tqdm.auto import tqdm

        return tqdm(pairs, desc=description, leave=False)
    return pairs


@torch.no_grad()
def sample_pc(
    score_model,
    sde,
    y,
    steps=30,
    corrector_steps=1,
    snr=0.5,
    generator=None,
    x_T=None,
    progress=False,
):
    """Predictor-corrector sampler (SGMSE+): Langevin, then reverse diffusion.

    Arguments
    ---------
    score_model : callable
        ``score_model(x_t, y, t)`` -> score, as
        :class:`speechbrain_elbo.score.ScoreModel`.
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    y : torch.Tensor
        Noisy compressed spectrograms (B, 1, F, T), complex.
    steps : int
        N, the number of grid points from T to t_eps.
    corrector_steps : int
        Langevin steps before each predictor step (0 disables them).
    snr : float
        r, the corrector's step-size ratio.
    generator : torch.Generator, optional
        Source of all randomness, on y's device.
    x_T : torch.Tensor, optional
        Start state; default a prior sample CN(y, sigma_T^2).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    estimate : torch.Tensor
        Noise-free mean of the last step, like y.
    nfe : int
        Number of score evaluations, N (1 + corrector_steps).
    """
    grid = time_grid(sde, steps, y.device)
    x = _start(sde, y, x_T, generator)
    nfe = 0
    for t, t_next in _steps(grid, progress, "PC sampler"):
        for _ in range(corrector_steps):
            x = langevin_step(score_model, sde, x, y, t, snr, generator)
        x, mean = reverse_diffusion_step(
            score_model, sde, x, y, t, t_next, generator
        )
        nfe += 1 + corrector_steps
    return mean, nfe


@torch.no_grad()
def sample_euler(
    score_model, sde, y, steps=30, generator=None, x_T=None, progress=False
):
    """Probability-flow ODE with Euler steps; NFE = steps.

    Arguments are those of :func:`sample_pc` (no corrector); the generator is
    only used for the prior sample.
    """
    grid = time_grid(sde, steps, y.device)
    x = _start(sde, y, x_T, generator)
    for t, t_next in _steps(grid, progress, "ODE (Euler)"):
        x = euler_step(score_model, sde, x, y, t, t_next)
    return x, steps


@torch.no_grad()
def sample_heun(
    score_model, sde, y, steps=30, generator=None, x_T=None, progress=False
):
    """Probability-flow ODE with Heun steps; NFE = 2 steps - 1.

    Heun's correction needs the score at the end of a step, which does not
    exist at t = 0: the last step (t_eps -> 0) is an Euler step.
    """
    grid = time_grid(sde, steps, y.device)
    x = _start(sde, y, x_T, generator)
    nfe = 0
    for t, t_next in _steps(grid, progress, "ODE (Heun)"):
        if t_next > 0:
            x = heun_step(score_model, sde, x, y, t, t_next)
            nfe += 2
        else:
            x = euler_step(score_model, sde, x, y, t, t_next)
            nfe += 1
    return x, nfe


SAMPLERS = {"pc": sample_pc, "euler": sample_euler, "heun": sample_heun}


def _whole(value, least, what):
    """``value`` as an int >= ``least``, or one clear ``ValueError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or int(value) != value
        or value < least
    ):
        raise ValueError(
            f"{what} must be an integer >= {least}, got {value!r}."
        )
    return int(value)


class Sampler:
    """A sampler chosen by name with its settings, e.g. from YAML.

    The settings are checked here, where a sampler is made (a model
    folder's default, or a call's settings): a name that is not a sampler,
    fewer than one step, a negative number of corrector steps or a
    corrector ratio ``snr`` that is not a positive number is one
    ``ValueError``, before anything runs.

    Arguments
    ---------
    name : str
        ``"pc"``, ``"euler"`` or ``"heun"``.
    steps : int
        Grid points N.
    corrector_steps : int
        Langevin steps per predictor step (``"pc"`` only).
    snr : float
        Corrector step-size ratio r (``"pc"`` only).

    Example
    -------
    >>> from speechbrain_elbo.oracle import GaussianOracle
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> sde = OUVESDE(GeometricGNS())
    >>> sampler = Sampler("heun", steps=5)
    >>> y = torch.ones(1, 1, 2, 2, dtype=torch.complex64)
    >>> sampler(GaussianOracle(sde), sde, y, seed=0)[1]
    9
    >>> Sampler("pc", steps=30, snr=-0.5)
    Traceback (most recent call last):
    ...
    ValueError: snr must be a number > 0 (the corrector's step-size ratio; 0.5
    is usual), got -0.5.
    """

    def __init__(self, name="pc", steps=30, corrector_steps=1, snr=0.5):
        if name not in SAMPLERS:
            raise ValueError(
                f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}."
            )
        self.name = name
        self.steps = _whole(steps, 1, "steps")
        self.corrector_steps = _whole(corrector_steps, 0, "corrector_steps")
        if isinstance(snr, bool) or not isinstance(snr, numbers.Real):
            raise ValueError(f"snr must be a number > 0, got {snr!r}.")
        if not math.isfinite(snr) or snr <= 0:
            raise ValueError(
                f"snr must be a number > 0 (the corrector's step-size ratio; "
                f"0.5 is usual), got {snr!r}."
            )
        self.snr = float(snr)

    def options(self):
        """Keyword arguments passed to the sampling function."""
        if self.name == "pc":
            return {
                "steps": self.steps,
                "corrector_steps": self.corrector_steps,
                "snr": self.snr,
            }
        return {"steps": self.steps}

    def __call__(
        self, score_model, sde, y, generator=None, seed=None, progress=False
    ):
        """Sample; ``seed`` builds a generator on y's device when given."""
        if seed is not None:
            generator = torch.Generator(device=y.device).manual_seed(seed)
        return SAMPLERS[self.name](
            score_model,
            sde,
            y,
            generator=generator,
            progress=progress,
            **self.options(),
        )

    def __repr__(self):
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"Sampler({self.name!r}, {opts})"
