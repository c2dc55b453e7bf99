"""The stage-2 refinement model of the two-stage framework.

The refiner R takes the stage-1 estimate x_hat (the sampler output) and the
noisy spectrogram y and returns a corrected estimate x_hat + delta. Its
backbone is a :class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp` with input
channels [Re x_hat, Im x_hat, Re y, Im y] and one complex output channel.
The last layer starts at exactly zero, so a freshly built refiner is the
identity on x_hat and training starts from the stage-1 estimate.

A refiner has two jobs (docs/method.md, section 7): correcting sampler
outputs (``refiner(x_hat, y)``) and being the decoder of the ELBO, applied
to the Tweedie estimate at t_eps (``refiner.decode(x0_hat, y)``), whose
error is an order of magnitude smaller. A ``conditional`` refiner is told
the error level of its input (the RMS error per bin, measured on training
data for each kind of input: ``sample_level`` and ``decoder_level``), fed
to the backbone's noise conditioning as its logarithm, so that one network
can do both; an unconditional one applies the same function to both.
"""

import math

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
    conditional : bool
        Condition on the log error level of the input (see the module
        docstring); the conditioning layers start at zero, so a warm start
        from an unconditional refiner (:meth:`load_warm_start`) begins as
        that refiner.
    fourier_scale : float
        Scale of the Fourier features of the conditioning.

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
    >>> cond = Refiner(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1,
    ...                attn_resolutions=(), conditional=True)
    >>> cond.set_levels(sample=0.05, decoder=0.015)
    >>> torch.equal(cond(x_hat, y), cond.decode(x_hat, y))  # zero-initialised
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
        conditional=False,
        fourier_scale=16.0,
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
            conditional=bool(conditional),
            fourier_scale=fourier_scale,
            nonlinearity=nonlinearity,
            num_freqs=num_freqs,
            patch_size=patch_size,
        )
        config = dict(self.backbone.config)
        for key in ("in_channels", "out_channels"):
            del config[key]
        # Constructor arguments, plain values: what an export writes out.
        self.config = config
        self.conditional = bool(conditional)
        nn.init.zeros_(self.backbone.output_layer.weight)
        nn.init.zeros_(self.backbone.output_layer.bias)
        if self.conditional:
            for name, param in self.backbone.named_parameters():
                if ".dense." in f".{name}":
                    nn.init.zeros_(param)
            # RMS input error per bin of each kind of input (NaN: not set)
            self.register_buffer("sample_level", torch.tensor(math.nan))
            self.register_buffer("decoder_level", torch.tensor(math.nan))

    def set_levels(self, sample, decoder):
        """Set the input error levels of a conditional refiner.

        Arguments
        ---------
        sample : float
            RMS error per complex bin of the sampler outputs it refines.
        decoder : float
            RMS error per complex bin of the ELBO decoder's input.
        """
        if not self.conditional:
            raise ValueError("set_levels: this refiner is not conditional.")
        for name, value in (("sample", sample), ("decoder", decoder)):
            if not value > 0 or not math.isfinite(value):
                raise ValueError(
                    f"the {name} level must be a positive number, got {value}."
                )
        self.sample_level.fill_(float(sample))
        self.decoder_level.fill_(float(decoder))

    def _cond(self, level, batch):
        if not self.conditional:
            return None
        if level is None:
            level = self.sample_level
        level = torch.as_tensor(level, device=self.sample_level.device)
        if not bool(torch.isfinite(level).all()):
            raise ValueError(
                "This conditional refiner has no input levels: call "
                "set_levels(sample=..., decoder=...) before using it (the "
                "recipes measure them on the training data)."
            )
        return torch.log(level.float()).expand(batch)

    def load_warm_start(self, state):
        """Load a refiner's ``state_dict`` to start training from it.

        Strict, except that a conditional refiner may start from an
        unconditional one: its conditioning layers (and levels) are not in
        ``state`` and keep their initial values, so that it computes the
        same function until it is trained.
        """
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as error:  # shapes that differ
            raise ValueError(
                "the warm-start refiner does not match this refiner's "
                f"configuration ({str(error).splitlines()[1].strip()}); "
                "start from a refiner of the same layout."
            ) from None
        own = {"sample_level", "decoder_level"}
        allowed = {
            key
            for key in missing
            if self.conditional
            and (
                key in own
                or ".dense." in f".{key}"
                or key.split(".")[1] in ("fourier", "emb_0", "emb_1")
            )
        }
        wrong = sorted(set(missing) - allowed) + sorted(unexpected)
        if wrong:
            raise ValueError(
                "the warm-start refiner does not match this refiner's "
                f"configuration (mismatched keys: {wrong[:5]}); start from a "
                "refiner of the same layout."
            )

    @property
    def frame_multiple(self):
        """Multiple the backbone pads the frame axis to (int)."""
        return self.backbone.frame_multiple

    def decode(self, x0_hat, y):
        """The refiner as the decoder of the ELBO (docs/method.md, §4, §7):
        the refinement of the Tweedie estimate ``x0_hat`` at t_eps, at the
        decoder's input level."""
        level = self.decoder_level if self.conditional else None
        return self(x0_hat, y, level)

    def forward(self, x_hat, y, level=None):
        """Refine ``x_hat`` given the noisy ``y``.

        Arguments
        ---------
        x_hat : torch.Tensor
            Complex stage-1 estimate (B, 1, F, T).
        y : torch.Tensor
            Complex noisy spectrogram (B, 1, F, T).
        level : float or torch.Tensor, optional
            RMS error level of the inputs, a number or (B,) (conditional
            refiners; default ``sample_level``, that of sampler outputs).
            An unconditional refiner ignores it.

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
        delta = self.backbone(inputs, self._cond(level, x_hat.shape[0]))
        return x_hat + torch.complex(delta[:, :1], delta[:, 1:])
