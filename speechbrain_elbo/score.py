"""From a network's raw output to the score of docs/method.md §2.

The score convention: s(x_t, y, t) approximates -(x_t - mu_t) / sigma_t^2,
so the regression target for one sample is -z / sigma_t. The backbone
receives the channels [Re x_t, Im x_t, Re y, Im y] and the noise level
log(sigma_t); it predicts the normalised noise z ("noise prediction"), and
the score is exactly

    s = -net(x_t, y, log sigma_t) / sigma_t.

This is the SGMSE+ parameterisation (its network divides by the noise scale
and the model negates), written so that the conversion is one line and can
be tested on its own. The conversion runs in float32 under autocast.

A backbone may declare another parameterisation in its attribute
``score_parameterisation`` (default ``"noise"``, the one above):

- ``"sgmse_time"``: the parameterisation of the published sgmse checkpoints
  (sgmse 0.1.2, backbone ``ncsnpp``), which condition on the diffusion time,
  not on sigma_t: the Fourier features take log(t), the last feature map is
  divided by t before the output convolution, and the output is negated,

      s = -net(x_t, y, log t, feature_divisor=t).

  Imported sgmse models use it (:mod:`speechbrain_elbo.interop.sgmse`).
- ``"sgmse_time_output"``: the same for sgmse's ``ncsnpp_48k`` backbone,
  which divides the output (after the output convolution) by t,

      s = -net(x_t, y, log t) / t.

- ``"sgmse_v2"``: sgmse's ``ncsnpp_v2`` backbone, which leaves the
  scaling to the score model, set by the backbone's ``preconditioning``
  dict (the checkpoint's ``c_in``, ``c_out``, ``c_skip``,
  ``network_scaling``, ``sigma_data`` and ``loss_type``). With
  sigma = sigma_t and sigma_d = ``sigma_data`` (docs/method.md, section 3:
  the network's output made a score),

      F = net(c_in x_t, c_in y, log t) / n(t),
      s = c_skip x_t + c_out F            (loss_type "score_matching"),
      s = (F - x_t) / sigma^2             (loss_type "denoiser"),

  where c_in is 1 or 1 / sqrt(sigma^2 + sigma_d^2) ("edm"); n(t) is 1
  (``network_scaling`` None), sigma ("1/sigma") or t ("1/t"); c_skip is 0
  or sigma_d^2 / (sigma^2 + sigma_d^2) ("edm"); c_out is 1, sigma,
  1 / sigma or sigma sigma_d / sqrt(sigma^2 + sigma_d^2) ("edm").

Example
-------
>>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
>>> class Zero(torch.nn.Module):
...     def forward(self, x, cond):
...         return torch.zeros(x.shape[0], 2, *x.shape[2:])
>>> model = ScoreModel(Zero(), OUVESDE(GeometricGNS()))
>>> x = torch.ones(1, 1, 4, 3, dtype=torch.complex64)
>>> model(x, x, torch.tensor([0.5])).abs().max()
tensor(0.)
"""

import torch

from speechbrain_elbo.sde import expand_time

__all__ = [
    "ScoreModel",
    "complex_to_channels",
    "channels_to_complex",
    "PARAMETERISATIONS",
    "PRECONDITIONING",
    "check_preconditioning",
]

#: Values of a backbone's ``score_parameterisation`` attribute.
PARAMETERISATIONS = ("noise", "sgmse_time", "sgmse_time_output", "sgmse_v2")

#: Allowed values of each ``preconditioning`` entry of ``"sgmse_v2"``.
PRECONDITIONING = {
    "loss_type": ("score_matching", "denoiser"),
    "network_scaling": (None, "1/sigma", "1/t"),
    "c_in": ("1", "edm"),
    "c_out": ("1", "sigma", "1/sigma", "edm"),
    "c_skip": ("0", "edm"),
}


def complex_to_channels(*specs):
    """Stack complex (B, 1, F, T) tensors as real channels (B, 2k, F, T).

    Example
    -------
    >>> x = torch.tensor([[[[1 + 2j]]]])
    >>> complex_to_channels(x, 3 * x).flatten()
    tensor([1., 2., 3., 6.])
    """
    parts = []
    for spec in specs:
        parts.extend([spec.real, spec.imag])
    return torch.cat(parts, dim=1)


def channels_to_complex(channels):
    """Real channels (B, 2, F, T) -> complex64 (B, 1, F, T), in float32.

    Example
    -------
    >>> channels_to_complex(torch.tensor([[[[1.0]], [[2.0]]]]))
    tensor([[[[1.+2.j]]]])
    """
    if channels.shape[1] != 2:
        raise ValueError(
            f"Expected 2 output channels (real, imaginary), got "
            f"{channels.shape[1]}."
        )
    channels = channels.float()
    return torch.complex(channels[:, :1], channels[:, 1:])


def check_preconditioning(preconditioning):
    """Check a ``"sgmse_v2"`` backbone's ``preconditioning`` dict.

    Arguments
    ---------
    preconditioning : dict
        ``loss_type``, ``network_scaling``, ``c_in``, ``c_out``, ``c_skip``
        (values of :data:`PRECONDITIONING`) and ``sigma_data`` (> 0).

    Returns
    -------
    dict
        The same settings, ``sigma_data`` as a float.

    Raises
    ------
    ValueError
        A missing entry or a value that is not reproduced, named.

    Example
    -------
    >>> settings = dict(loss_type="score_matching", network_scaling="1/t",
    ...                 c_in="1", c_out="1", c_skip="0", sigma_data=0.1)
    >>> check_preconditioning(settings)["network_scaling"]
    '1/t'
    >>> check_preconditioning({**settings, "c_out": "2"})
    Traceback (most recent call last):
    ...
    ValueError: c_out='2' is not supported (reproduced: '1', 'sigma',
    '1/sigma', 'edm').
    """
    checked = {}
    for key, allowed in PRECONDITIONING.items():
        if key not in preconditioning:
            raise ValueError(f"preconditioning lacks {key!r}.")
        value = preconditioning[key]
        if value not in allowed:
            names = ", ".join(repr(a) for a in allowed)
            raise ValueError(
                f"{key}={value!r} is not supported (reproduced: {names})."
            )
        checked[key] = value
    sigma_data = float(preconditioning.get("sigma_data", float("nan")))
    if not sigma_data > 0:
        raise ValueError(
            f"sigma_data must be > 0, got {preconditioning.get('sigma_data')}."
        )
    checked["sigma_data"] = sigma_data
    return checked


class ScoreModel(torch.nn.Module):
    """A backbone network turned into the score of the SDE.

    Arguments
    ---------
    backbone : torch.nn.Module
        Maps real channels (B, 4, F, T) and a noise level (B,) to (B, 2, F, T),
        e.g. :class:`speechbrain_elbo.lobes.ncsnpp.NCSNpp`.
    sde : speechbrain_elbo.sde.OUVESDE
        Gives sigma_t.

    Example
    -------
    >>> from speechbrain_elbo.sde import OUVESDE, GeometricGNS
    >>> class Noise(torch.nn.Module):
    ...     def forward(self, x, cond):
    ...         return torch.ones(x.shape[0], 2, *x.shape[2:])
    >>> sde = OUVESDE(GeometricGNS())
    >>> model = ScoreModel(Noise(), sde)
    >>> x = torch.zeros(1, 1, 2, 2, dtype=torch.complex64)
    >>> t = torch.tensor([1.0])
    >>> model(x, x, t)[0, 0, 0, 0] * sde.std(t)
    tensor([-1.-1.j])
    """

    def __init__(self, backbone, sde):
        super().__init__()
        self.backbone = backbone
        self.sde = sde
        self.parameterisation = getattr(
            backbone, "score_parameterisation", "noise"
        )
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"The backbone declares score_parameterisation="
                f"{self.parameterisation!r}; supported: {PARAMETERISATIONS}."
            )
        if self.parameterisation == "sgmse_v2":
            self.preconditioning = check_preconditioning(
                getattr(backbone, "preconditioning", {})
            )

    def noise_level(self, t):
        """The conditioning scalar given to the backbone.

        log(sigma_t), or log(t) for the ``"sgmse*"`` parameterisations.
        """
        if self.parameterisation.startswith("sgmse"):
            return torch.log(t)
        return torch.log(self.sde.std(t))

    def predict_noise(self, x_t, y, t):
        """The estimate of z (complex) that the score corresponds to."""
        if self.parameterisation.startswith("sgmse"):
            # z_hat = -sigma_t s
            return -expand_time(self.sde.std(t), x_t) * self(x_t, y, t)
        inputs = complex_to_channels(x_t, y)
        return channels_to_complex(self.backbone(inputs, self.noise_level(t)))

    def forward(self, x_t, y, t):
        """Score s(x_t, y, t), complex64 (B, 1, F, T)."""
        if self.parameterisation == "sgmse_time":
            # s = -net(x_t, y, log t, feature_divisor=t)
            inputs = complex_to_channels(x_t, y)
            out = self.backbone(inputs, self.noise_level(t), feature_divisor=t)
            return -channels_to_complex(out)
        if self.parameterisation == "sgmse_time_output":
            # s = -net(x_t, y, log t) / t
            inputs = complex_to_channels(x_t, y)
            out = channels_to_complex(
                self.backbone(inputs, self.noise_level(t))
            )
            return -out / expand_time(t, x_t)
        if self.parameterisation == "sgmse_v2":
            return self._sgmse_v2_score(x_t, y, t)
        sigma = expand_time(self.sde.std(t), x_t)
        # s = -z_hat / sigma_t
        return -self.predict_noise(x_t, y, t) / sigma

    def _sgmse_v2_score(self, x_t, y, t):
        """The score of sgmse's ``ncsnpp_v2`` (module docstring)."""
        pre = self.preconditioning
        sigma = expand_time(self.sde.std(t), x_t).float()
        var_data = pre["sigma_data"] ** 2
        c_in = 1.0
        if pre["c_in"] == "edm":
            c_in = 1.0 / torch.sqrt(sigma**2 + var_data)
        inputs = complex_to_channels(c_in * x_t, c_in * y)
        out = channels_to_complex(self.backbone(inputs, self.noise_level(t)))
        # F = net(c_in x_t, c_in y, log t) / n(t)
        if pre["network_scaling"] == "1/sigma":
            out = out / sigma
        elif pre["network_scaling"] == "1/t":
            out = out / expand_time(t, x_t).float()
        if pre["loss_type"] == "denoiser":
            # s = (F - x_t) / sigma^2
            return (out - x_t) / sigma**2
        c_out = {
            "1": 1.0,
            "sigma": sigma,
            "1/sigma": 1.0 / sigma,
            "edm": sigma * pre["sigma_data"] / torch.sqrt(var_data + sigma**2),
        }[pre["c_out"]]
        # s = c_skip x_t + c_out F
        score = c_out * out
        if pre["c_skip"] == "edm":
            score = score + var_data / (sigma**2 + var_data) * x_t
        return score

    def data_prediction(self, x_t, y, t):
        """Tweedie estimate x0_hat of the clean spectrogram."""
        return self.sde.data_prediction(x_t, y, t, self(x_t, y, t))
