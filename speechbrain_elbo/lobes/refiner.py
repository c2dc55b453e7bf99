"""The stage-2 refinement model of the two-stage framework.

The refiner R takes the stage-1 estimate x_hat (the sampler output) and the
noisy spectrogram y and returns a corrected estimate x_hat + delta. Its
backbone is an unconditional :class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp`
with input channels [Re x_hat, Im x_hat, Re y, Im y] and one complex output
channel. The last layer starts at exactly zero, so a freshly built refiner
is the identity on x_hat and training starts from the stage-1 estimate.
"""

import torch
from torch import nn

from speechbrain_elbo.lobes.ncsnpp import NCSNpp


class Refiner(nn.Module):
    """Residual U-Net refinement of a complex spectrogram estimate.

    All arguments are the backbone hyper-parameters of
    :class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp` (without noise
    conditioning). The defaults are StoRM's NCSN++M layout, as in
    ``hparams/models/refiner.yaml``.

    Arguments
    ---------
    nf : int
        Base number of feature channels.
    ch_mult : sequence of int
        Channel multiplier per resolution level.
    num_res_blocks : int
        Residual blocks per level.
    attn_resolutions : sequence of int
        Frequency sizes of the levels with self-attention.
    dropout : float
        Dropout probability inside residual blocks.
    fir_kernel : sequence of float
        FIR resampling taps.
    skip_rescale : bool
        Divide residual sums by sqrt(2).
    resblock_type : str
        "biggan" or "ddpm".
    progressive : str
        "output_skip", "residual" or "none".
    progressive_input : str
        "input_skip", "residual" or "none".
    progressive_combine : str
        "sum" or "cat".
    init_scale : float
        Initialisation scale of the last convolution of each branch.
    nonlinearity : str
        Activation name.
    num_freqs : int
        Frequency size that ``attn_resolutions`` refer to.
    patch_size : int
        Patch folding factor (1 disables it).

    Attributes
    ----------
    config : dict
        The constructor arguments as plain values, so that
        ``Refiner(**refiner.config)`` rebuilds the same network.

    Example
    -------
    >>> # The tiny configuration of hparams/models/refiner_tiny.yaml
    >>> refiner = Refiner(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1,
    ...                   attn_resolutions=())
    >>> x_hat = torch.randn(2, 1, 32, 9, dtype=torch.complex64)
    >>> y = torch.randn(2, 1, 32, 9, dtype=torch.complex64)
    >>> out = refiner(x_hat, y)
    >>> out.shape, out.dtype
    (torch.Size([2, 1, 32, 9]), torch.complex64)
    >>> torch.equal(out, x_hat)  # identity when freshly initialised
    True
    """

    def __init__(
        self,
        nf=128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale=True,
        resblock_type="biggan",
        progressive="output_skip",
        progressive_input="input_skip",
        progressive_combine="sum",
        init_scale=0.0,
        nonlinearity="swish",
        num_freqs=256,
        patch_size=1,
    ):
        super().__init__()
        self.backbone = NCSNpp(
            in_channels=4,
            out_channels=2,
            nf=nf,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            dropout=dropout,
            fir_kernel=fir_kernel,
            skip_rescale=skip_rescale,
            resblock_type=resblock_type,
            progressive=progressive,
            progressive_input=progressive_input,
            progressive_combine=progressive_combine,
            init_scale=init_scale,
            conditional=False,
            nonlinearity=nonlinearity,
            num_freqs=num_freqs,
            patch_size=patch_size,
        )
        config = dict(self.backbone.config)
        for key in (
            "in_channels",
            "out_channels",
            "fourier_scale",
            "conditional",
        ):
            del config[key]
        # Constructor arguments, plain values: what an export writes out.
        self.config = config
        nn.init.zeros_(self.backbone.output_layer.weight)
        nn.init.zeros_(self.backbone.output_layer.bias)

    @property
    def frame_multiple(self):
        """Multiple the backbone pads the frame axis to (int)."""
        return self.backbone.frame_multiple

    def forward(self, x_hat, y):
        """Refine ``x_hat`` given the noisy ``y``.

        Arguments
        ---------
        x_hat : torch.Tensor
            Complex stage-1 estimate (B, 1, F, T).
        y : torch.Tensor
            Complex noisy spectrogram (B, 1, F, T).

        Returns
        -------
        torch.Tensor
            Complex (B, 1, F, T): ``x_hat + delta``.
        """
        for name, value in (("x_hat", x_hat), ("y", y)):
            shape_ok = value.dim() == 4 and value.shape[1] == 1
            if not value.is_complex() or not shape_ok:
                raise ValueError(
                    f"{name} must be a complex tensor of shape (B, 1, F, T), "
                    f"got shape {tuple(value.shape)} and dtype {value.dtype}."
                )
        if x_hat.shape != y.shape:
            raise ValueError(
                f"x_hat and y must have the same shape, got "
                f"{tuple(x_hat.shape)} and {tuple(y.shape)}."
            )
        inputs = torch.cat([x_hat.real, x_hat.imag, y.real, y.imag], dim=1).to(
            x_hat.real.dtype
        )
        delta = self.backbone(inputs)
        return x_hat + torch.complex(delta[:, :1], delta[:, 1:])
