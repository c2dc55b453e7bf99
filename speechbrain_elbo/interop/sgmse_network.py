"""The NCSN++ backbone with the conventions of sgmse's ``ncsnpp``.

sgmse's ``ncsnpp``, ``ncsnpp_48k`` and ``ncsnpp_v2`` backbones are the
network of
:class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp` (same parameters, state_dict
keys mapped by :mod:`speechbrain_elbo.interop.sgmse_weights`); what
differs is how the score model conditions and scales them, and how the
frames are padded before sampling. :class:`SGMSENCSNpp` declares both, so
that an exported folder (:mod:`speechbrain_elbo.interop.sgmse`) runs them
as sgmse does; :class:`SGMSENCSNppV2` adds the input/output scaling of
``ncsnpp_v2`` (``preconditioning``).

Example
-------
>>> net = SGMSENCSNpp(nf=8, ch_mult=[1, 2], num_res_blocks=1,
...                   attn_resolutions=[], num_freqs=64, divide_by_t="output")
>>> net.score_parameterisation, net.frame_multiple == SGMSE_PAD_MULTIPLE
('sgmse_time_output', True)
"""

import math

from speechbrain_elbo.lobes.ncsnpp import NCSNpp
from speechbrain_elbo.score import check_preconditioning

__all__ = ["SGMSENCSNpp", "SGMSENCSNppV2", "SGMSE_PAD_MULTIPLE"]

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
      ``frame_padding`` (``pad_mode``) and ``decode_padded``, so
      that the enhancement pipeline (:mod:`speechbrain_elbo.pipeline`)
      pads the frames as sgmse's ``enhancement.py`` does (``pad_spec`` to a
      multiple of 64: zeros, reflection for ``ncsnpp_48k`` and
      ``ncsnpp_v2``) and decodes the padded estimate before cropping the
      waveform (``to_audio(sample, T_orig)``; ``decode_padded=False``: the
      frames are cropped first, as SpeechBrain's SGMSE recipe does);
      called directly, the network pads only to its ``unet_multiple``, as
      sgmse's network runs on any multiple of it.

    Arguments
    ---------
    pad_multiple : int
        Frame multiple of sgmse's padding before sampling (64).
    divide_by_t : str
        ``"features"`` (sgmse ``ncsnpp``) or ``"output"`` (``ncsnpp_48k``).
    pad_mode : str
        ``"zeros"`` (sgmse ``ncsnpp``) or ``"reflection"`` (``ncsnpp_48k``).
    decode_padded : bool
        Decode the padded estimate, then crop the waveform (sgmse's
        ``enhancement.py``, default), or crop the frames, then decode.
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

    def __init__(
        self,
        pad_multiple=SGMSE_PAD_MULTIPLE,
        divide_by_t="features",
        pad_mode="zeros",
        decode_padded=True,
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
        self.decode_padded = bool(decode_padded)
        self.frame_multiple = math.lcm(self.frame_multiple, int(pad_multiple))
        self.config["pad_multiple"] = int(pad_multiple)
        self.config["divide_by_t"] = divide_by_t
        self.config["pad_mode"] = pad_mode
        self.config["decode_padded"] = self.decode_padded


class SGMSENCSNppV2(SGMSENCSNpp):
    """NCSN++ with the conventions of sgmse's ``ncsnpp_v2`` backbone.

    The network of :class:`SGMSENCSNpp` (same parameters and state_dict
    keys: sgmse's ``ncsnpp_v2`` builds the same modules) without any
    division by t inside; the score model scales its inputs and output as
    the checkpoint's ``ScoreModel`` was trained to: ``score_parameterisation``
    is ``"sgmse_v2"`` and ``preconditioning`` holds the settings
    (:class:`~speechbrain_elbo.score.ScoreModel`, docs/method.md, section 3).
    The frames are padded by reflection, as sgmse's ``enhancement.py`` does
    for ``ncsnpp_v2``.

    Arguments
    ---------
    loss_type : str
        ``"score_matching"`` (the output is a score) or ``"denoiser"``.
    network_scaling : str or None
        None, ``"1/sigma"`` or ``"1/t"``: what the output is divided by.
    c_in, c_out, c_skip : str
        sgmse's input, output and skip scalings (``"1"``/``"edm"``;
        ``"1"``/``"sigma"``/``"1/sigma"``/``"edm"``; ``"0"``/``"edm"``).
    sigma_data : float
        The data standard deviation of the ``"edm"`` scalings.
    pad_mode : str
        Frame padding before sampling (``"reflection"``, sgmse's).
    **kwargs
        The arguments of :class:`SGMSENCSNpp` but ``divide_by_t``.

    Example
    -------
    >>> import torch
    >>> net = SGMSENCSNppV2(nf=8, ch_mult=[1, 2], num_res_blocks=1,
    ...                     attn_resolutions=[], num_freqs=64,
    ...                     network_scaling="1/t", c_in="edm")
    >>> net.score_parameterisation, net.frame_padding
    ('sgmse_v2', 'reflection')
    >>> net.preconditioning["c_in"], net.config["network_scaling"]
    ('edm', '1/t')
    >>> SGMSENCSNppV2(nf=8, ch_mult=[1, 2], loss_type="data_prediction")
    Traceback (most recent call last):
    ...
    ValueError: loss_type='data_prediction' is not supported (reproduced:
    'score_matching', 'denoiser').
    """

    def __init__(
        self,
        loss_type="score_matching",
        network_scaling=None,
        c_in="1",
        c_out="1",
        c_skip="0",
        sigma_data=0.1,
        pad_mode="reflection",
        **kwargs,
    ):
        if "divide_by_t" in kwargs:
            raise ValueError(
                "SGMSENCSNppV2 does not divide by t inside the network; "
                "use network_scaling."
            )
        self.preconditioning = check_preconditioning(
            dict(
                loss_type=loss_type,
                network_scaling=network_scaling,
                c_in=c_in,
                c_out=c_out,
                c_skip=c_skip,
                sigma_data=sigma_data,
            )
        )
        super().__init__(pad_mode=pad_mode, **kwargs)
        self.score_parameterisation = "sgmse_v2"
        del self.config["divide_by_t"]
        self.config.update(self.preconditioning)
