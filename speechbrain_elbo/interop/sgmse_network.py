"""The NCSN++ backbone with the conventions of sgmse's ``ncsnpp``.

sgmse's ``ncsnpp`` and ``ncsnpp_48k`` backbones are the network of
:class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp` (same parameters, state_dict
keys mapped by :mod:`speechbrain_elbo.interop.sgmse_weights`); what
differs is how the score model conditions and scales them, and how the
frames are padded before sampling. :class:`SGMSENCSNpp` declares both, so
that an exported folder (:mod:`speechbrain_elbo.interop.sgmse`) runs them
as sgmse does.

Example
-------
>>> net = SGMSENCSNpp(nf=8, ch_mult=[1, 2], num_res_blocks=1,
...                   attn_resolutions=[], num_freqs=64, divide_by_t="output")
>>> net.score_parameterisation, net.frame_multiple == SGMSE_PAD_MULTIPLE
('sgmse_time_output', True)
"""

import math

from speechbrain_elbo.lobes.ncsnpp import NCSNpp

__all__ = ["SGMSENCSNpp", "SGMSE_PAD_MULTIPLE"]

#: sgmse's ``pad_spec`` pads the frames to a multiple of 64 before sampling.
SGMSE_PAD_MULTIPLE = 64


class SGMSENCSNpp(NCSNpp):
    """NCSN++ with the conventions of sgmse's ``ncsnpp`` backbones.

    The same network as :class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp`
    (same parameters and state_dict keys); it declares

    - ``score_parameterisation``: the score model conditions it on log(t),
      divides its last feature map (``divide_by_t="features"``, sgmse
      ``ncsnpp``: ``"sgmse_time"``) or its output (``"output"``, sgmse
      ``ncsnpp_48k``: ``"sgmse_time_output"``) by t and negates the result
      (:class:`~speechbrain_elbo.score.ScoreModel`);
    - ``frame_multiple`` = lcm(``pad_multiple``, ``unet_multiple``),
      ``frame_padding`` (``pad_mode``) and ``decode_padded`` = True, so
      that the enhancement pipeline (:mod:`speechbrain_elbo.pipeline`)
      pads the frames as sgmse's ``enhancement.py`` does (``pad_spec`` to a
      multiple of 64: zeros, reflection for ``ncsnpp_48k``) and decodes the
      padded estimate before cropping the waveform (``to_audio(sample,
      T_orig)``); called directly, the network pads only to its
      ``unet_multiple``, as sgmse's network runs on any multiple of it.

    Arguments
    ---------
    pad_multiple : int
        Frame multiple of sgmse's padding before sampling (64).
    divide_by_t : str
        ``"features"`` (sgmse ``ncsnpp``) or ``"output"`` (``ncsnpp_48k``).
    pad_mode : str
        ``"zeros"`` (sgmse ``ncsnpp``) or ``"reflection"`` (``ncsnpp_48k``).
    **kwargs
        The arguments of :class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp`.

    Example
    -------
    >>> import torch
    >>> net = SGMSENCSNpp(nf=8, ch_mult=[1, 2], num_res_blocks=1,
    ...                   attn_resolutions=[], num_freqs=64)
    >>> net.frame_multiple, net.config["pad_multiple"]
    (64, 64)
    >>> net.score_parameterisation, net.frame_padding, net.decode_padded
    ('sgmse_time', 'zeros', True)
    >>> net(torch.randn(1, 4, 64, 3), torch.tensor([-1.0])).shape
    torch.Size([1, 2, 64, 3])
    """

    _PARAMETERISATIONS = {
        "features": "sgmse_time",
        "output": "sgmse_time_output",
    }

    #: The pipeline decodes the padded estimate, then crops the waveform.
    decode_padded = True

    def __init__(
        self,
        pad_multiple=SGMSE_PAD_MULTIPLE,
        divide_by_t="features",
        pad_mode="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(pad_multiple) < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}.")
        if divide_by_t not in self._PARAMETERISATIONS:
            raise ValueError(
                "divide_by_t must be 'features' (sgmse ncsnpp) or 'output' "
                f"(sgmse ncsnpp_48k), got {divide_by_t!r}."
            )
        if pad_mode not in ("zeros", "reflection"):
            raise ValueError(
                f"pad_mode must be 'zeros' or 'reflection', got {pad_mode!r}."
            )
        self.score_parameterisation = self._PARAMETERISATIONS[divide_by_t]
        self.frame_padding = pad_mode
        self.frame_multiple = math.lcm(self.frame_multiple, int(pad_multiple))
        self.config["pad_multiple"] = int(pad_multiple)
        self.config["divide_by_t"] = divide_by_t
        self.config["pad_mode"] = pad_mode
