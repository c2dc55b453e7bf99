"""NCSN++: the noise-conditional U-Net of SGMSE+ and StoRM.

The network maps a real tensor of stacked spectrogram channels
(B, in_channels, F, T) -- for the score model [Re x_t, Im x_t, Re y, Im y] --
and a noise-conditioning scalar per example to a real tensor
(B, out_channels, F, T). It returns the raw network output; turning it into
a score (scaling by the noise level, sign) is the caller's job.

The architecture is NCSN++ (Song et al., 2021) as configured by SGMSE+
(Richter et al., 2023): a U-Net over (frequency, time) with BigGAN residual
blocks and FIR resampling, progressive input skips (the input pyramid is
merged into the encoder at every level), progressive output skips (every
decoder level adds a prediction to an up-sampled output pyramid),
self-attention at chosen frequency resolutions and in the middle, and
Gaussian Fourier features of the conditioning scalar. With the default
arguments it has exactly the 65,590,822 parameters of the SGMSE+ backbone;
``ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=()`` gives the
27,756,314 of StoRM's NCSN++M (same block structure, lighter
configuration).

Two additions make it practical on a CPU: any number of frames works (the
time axis is zero-padded to ``frame_multiple`` and cropped back), and
``patch_size > 1`` folds p x p patches of the spectrogram into channels
before the U-Net, a network that is several times cheaper per frame.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_elbo.lobes.layers import (
    _SQRT_HALF,
    AttnBlock,
    Combine,
    FIRConv2d,
    FIRResample2d,
    GaussianFourierProjection,
    ResBlockBigGAN,
    ResBlockDDPM,
    conv2d,
    default_init_,
    fir_kernel_2d,
    get_activation,
    group_norm,
)

_PROGRESSIVE = ("none", "output_skip", "residual")
_PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
_RESBLOCKS = ("biggan", "ddpm")


def _int_tuple(value, name):
    """Turn a YAML list or a tuple of ints into a tuple, with a clear error."""
    if isinstance(value, int) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a list of integers, e.g. [1, 2, 2], got {value!r}."
        )
    return tuple(int(v) for v in value)


def _choice(value, name, allowed):
    """Lower-case ``value`` and check it is one of ``allowed``."""
    key = str(value).lower()
    if key not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    return key


class NCSNpp(nn.Module):
    """NCSN++ U-Net over (frequency, time) with noise conditioning.

    Arguments
    ---------
    in_channels : int
        Real input channels (4 for [Re x_t, Im x_t, Re y, Im y]).
    out_channels : int
        Real output channels (2 for one complex channel).
    nf : int
        Base number of feature channels.
    ch_mult : sequence of int
        Channel multiplier of each resolution level; the number of levels is
        ``len(ch_mult)`` and the feature map is halved ``len(ch_mult) - 1``
        times along both axes.
    num_res_blocks : int
        Residual blocks per level in the encoder (the decoder has one more,
        for the skip connection from the down-sampling step).
    attn_resolutions : sequence of int
        Frequency sizes (dim -2 of the feature map, for an input with
        ``num_freqs`` bins) at which a level gets self-attention after each
        residual block. The middle block always has attention.
    dropout : float
        Dropout probability inside the residual blocks.
    fir_kernel : sequence of float
        1-D taps (even length) of the FIR resampling filter.
    skip_rescale : bool
        Divide residual sums by sqrt(2).
    resblock_type : str
        "biggan" (resampling inside residual blocks) or "ddpm" (separate
        FIR-fused 3x3 resampling convolutions).
    progressive : str
        Output pyramid: "output_skip", "residual" or "none".
    progressive_input : str
        Input pyramid: "input_skip", "residual" or "none".
    progressive_combine : str
        How "input_skip" merges the pyramid: "sum" or "cat".
    init_scale : float
        Initialisation scale of the last convolution of each residual and
        attention branch and of the output-pyramid convolutions (0: they
        start near zero, as in NCSN++).
    fourier_scale : float
        Standard deviation of the Gaussian Fourier frequencies.
    conditional : bool
        Whether the network takes a conditioning scalar. If False, no
        Fourier features or embedding layers are built and ``cond`` must be
        None.
    nonlinearity : str
        Activation: "swish" (default), "relu", "elu" or "lrelu".
    num_freqs : int
        Frequency size of the input that ``attn_resolutions`` refer to
        (256 for n_fft = 510). The attention levels are fixed when the
        network is built; an input with a different F gets attention at the
        same depths.
    patch_size : int
        Fold ``patch_size x patch_size`` patches into channels at the input
        (pixel unshuffle) and unfold them at the output; 1 disables it.

    Attributes
    ----------
    unet_multiple : int
        ``patch_size * 2 ** (len(ch_mult) - 1)``: F must be a multiple of
        it, and the frame axis is padded to one internally.
    frame_multiple : int
        The frame multiple that callers pad inputs to
        (:func:`speechbrain_elbo.pipeline.frame_multiple_of`):
        ``unet_multiple``, unless a subclass asks for more (an imported
        sgmse model pads to 64 frames, as sgmse does).
    config : dict
        The constructor arguments as plain values (lists, not tuples), so
        that ``NCSNpp(**net.config)`` rebuilds the same network.

    Example
    -------
    >>> # The tiny configuration of hparams/models/tiny.yaml
    >>> net = NCSNpp(nf=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1,
    ...              attn_resolutions=())
    >>> sum(p.numel() for p in net.parameters())
    442874
    >>> net.frame_multiple
    8
    >>> x = torch.randn(2, 4, 32, 13)  # any number of frames
    >>> log_sigma = torch.log(torch.tensor([0.1, 0.5]))
    >>> net(x, log_sigma).shape
    torch.Size([2, 2, 32, 13])
    >>> net(torch.randn(1, 4, 36, 8), log_sigma[:1])
    Traceback (most recent call last):
    ...
    ValueError: The frequency size F=36 must be a multiple of 8 ...
    """

    def __init__(
        self,
        in_channels=4,
        out_channels=2,
        nf=128,
        ch_mult=(1, 1, 2, 2, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        dropout=0.0,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale=True,
        resblock_type="biggan",
        progressive="output_skip",
        progressive_input="input_skip",
        progressive_combine="sum",
        init_scale=0.0,
        fourier_scale=16.0,
        conditional=True,
        nonlinearity="swish",
        num_freqs=256,
        patch_size=1,
    ):
        super().__init__()
        ch_mult = _int_tuple(ch_mult, "ch_mult")
        attn_resolutions = _int_tuple(attn_resolutions, "attn_resolutions")
        fir_kernel_2d(fir_kernel)  # raises a clear error for bad taps
        fir_kernel = tuple(float(v) for v in fir_kernel)
        if not ch_mult:
            raise ValueError("ch_mult needs at least one level, e.g. [1, 2].")
        if nf < 4 or num_res_blocks < 1 or patch_size < 1:
            raise ValueError(
                "Need nf >= 4, num_res_blocks >= 1 and patch_size >= 1; got "
                f"nf={nf}, num_res_blocks={num_res_blocks}, "
                f"patch_size={patch_size}."
            )
        self.resblock_type = _choice(resblock_type, "resblock_type", _RESBLOCKS)
        self.progressive = _choice(progressive, "progressive", _PROGRESSIVE)
        self.progressive_input = _choice(
            progressive_input, "progressive_input", _PROGRESSIVE_INPUT
        )
        combine = _choice(
            progressive_combine, "progressive_combine", ("sum", "cat")
        )
        # Constructor arguments, plain values: what an export writes out.
        self.config = dict(
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            nf=int(nf),
            ch_mult=list(ch_mult),
            num_res_blocks=int(num_res_blocks),
            attn_resolutions=list(attn_resolutions),
            dropout=float(dropout),
            fir_kernel=list(fir_kernel),
            skip_rescale=bool(skip_rescale),
            resblock_type=self.resblock_type,
            progressive=self.progressive,
            progressive_input=self.progressive_input,
            progressive_combine=combine,
            init_scale=float(init_scale),
            fourier_scale=float(fourier_scale),
            conditional=bool(conditional),
            nonlinearity=str(nonlinearity),
            num_freqs=int(num_freqs),
            patch_size=int(patch_size),
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conditional = conditional
        self.skip_rescale = skip_rescale
        self.patch_size = patch_size
        self.num_levels = len(ch_mult)
        self.unet_multiple = patch_size * 2 ** (self.num_levels - 1)
        self.frame_multiple = self.unet_multiple
        self.act = get_activation(nonlinearity)

        # Channels of the (patch-folded) input and of the output pyramid.
        channels = in_channels * patch_size**2
        emb_dim = None
        if conditional:
            emb_dim = 4 * nf
            self.fourier = GaussianFourierProjection(nf, scale=fourier_scale)
            self.emb_0 = nn.Linear(2 * nf, emb_dim)
            self.emb_1 = nn.Linear(emb_dim, emb_dim)
            for layer in (self.emb_0, self.emb_1):
                default_init_(layer.weight)
                nn.init.zeros_(layer.bias)

        block_kwargs = dict(
            emb_dim=emb_dim,
            dropout=dropout,
            skip_rescale=skip_rescale,
            init_scale=init_scale,
            nonlinearity=nonlinearity,
        )

        def res_block(in_ch, out_ch=None):
            if self.resblock_type == "biggan":
                return ResBlockBigGAN(
                    in_ch, out_ch, fir_kernel=fir_kernel, **block_kwargs
                )
            return ResBlockDDPM(in_ch, out_ch, **block_kwargs)

        def resample(ch, direction):
            if self.resblock_type == "biggan":
                return ResBlockBigGAN(
                    ch,
                    fir_kernel=fir_kernel,
                    up=direction == "up",
                    down=direction == "down",
                    **block_kwargs,
                )
            return FIRConv2d(ch, ch, direction, fir_kernel)

        def attention(ch):
            return AttnBlock(ch, skip_rescale, init_scale)

        base_freqs = num_freqs // patch_size
        self.attn_levels = tuple(
            i
            for i in range(self.num_levels)
            if base_freqs // 2**i in attn_resolutions
        )

        # Encoder.
        self.input_conv = conv2d(channels, nf, 3)
        if self.progressive_input == "input_skip":
            self.pyramid_down = FIRResample2d("down", fir_kernel)
        skip_ch = [nf]
        in_ch = nf
        pyramid_ch = channels
        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.down_resample = nn.ModuleList()
        self.down_pyramid = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            blocks, attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(res_block(in_ch, nf * mult))
                in_ch = nf * mult
                if level in self.attn_levels:
                    attns.append(attention(in_ch))
                skip_ch.append(in_ch)
            self.down_blocks.append(blocks)
            self.down_attn.append(attns)
            if level == self.num_levels - 1:
                continue
            self.down_resample.append(resample(in_ch, "down"))
            if self.progressive_input == "input_skip":
                self.down_pyramid.append(Combine(pyramid_ch, in_ch, combine))
                if combine == "cat":
                    in_ch *= 2
            elif self.progressive_input == "residual":
                self.down_pyramid.append(
                    FIRConv2d(pyramid_ch, in_ch, "down", fir_kernel)
                )
                pyramid_ch = in_ch
            skip_ch.append(in_ch)

        # Middle.
        self.mid_block_0 = res_block(in_ch)
        self.mid_attn = attention(in_ch)
        self.mid_block_1 = res_block(in_ch)

        # Decoder.
        if self.progressive == "output_skip":
            self.pyramid_up = FIRResample2d("up", fir_kernel)
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.up_pyramid = nn.ModuleList()
        self.up_resample = nn.ModuleList()
        pyramid_ch = 0
        for level in reversed(range(self.num_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out_ch = nf * ch_mult[level]
                blocks.append(res_block(in_ch + skip_ch.pop(), out_ch))
                in_ch = out_ch
            self.up_blocks.append(blocks)
            attns = nn.ModuleList()
            if level in self.attn_levels:
                attns.append(attention(in_ch))
            self.up_attn.append(attns)
            if self.progressive == "output_skip":
                self.up_pyramid.append(
                    nn.Sequential(
                        group_norm(in_ch),
                        get_activation(nonlinearity),
                        conv2d(in_ch, channels, 3, init_scale=init_scale),
                    )
                )
            elif self.progressive == "residual":
                if level == self.num_levels - 1:
                    self.up_pyramid.append(
                        nn.Sequential(
                            group_norm(in_ch),
                            get_activation(nonlinearity),
                            conv2d(in_ch, in_ch, 3),
                        )
                    )
                else:
                    self.up_pyramid.append(
                        FIRConv2d(pyramid_ch, in_ch, "up", fir_kernel)
                    )
                pyramid_ch = in_ch
            if level != 0:
                self.up_resample.append(resample(in_ch, "up"))
        if self.progressive != "output_skip":
            self.final = nn.Sequential(
                group_norm(in_ch),
                get_activation(nonlinearity),
                conv2d(in_ch, channels, 3, init_scale=init_scale),
            )
        self.output_layer = nn.Conv2d(channels, out_channels * patch_size**2, 1)

    def _embed(self, cond, batch):
        """Validate ``cond`` and return the activated embedding or None."""
        if not self.conditional:
            if cond is not None:
                raise ValueError(
                    "This NCSNpp was built with conditional=False and takes "
                    "no conditioning; call it as net(x) without cond."
                )
            return None
        if cond is None:
            raise ValueError(
                "This NCSNpp is noise-conditional (conditional=True): pass "
                "cond, a (B,) tensor such as log(sigma_t) or t."
            )
        cond = torch.as_tensor(cond, device=self.fourier.W.device)
        if cond.dim() == 0:
            cond = cond.expand(batch)
        if cond.shape != (batch,) or cond.is_complex():
            raise ValueError(
                f"cond must be a real tensor of shape (B,) = ({batch},), got "
                f"shape {tuple(cond.shape)} and dtype {cond.dtype}."
            )
        emb = self.emb_0(self.fourier(cond))
        emb = self.emb_1(self.act(emb))
        # Every residual block applies the nonlinearity to the embedding
        # before its dense layer; do it once here.
        return self.act(emb)

    def forward(self, x, cond=None, feature_divisor=None):
        """Apply the network.

        Arguments
        ---------
        x : torch.Tensor
            Real input (B, in_channels, F, T). F must be divisible by
            ``unet_multiple``; any T >= 1 works (zero-padded internally).
        cond : torch.Tensor or None
            Conditioning scalar per example (B,) (or a 0-dim tensor for the
            whole batch), e.g. log(sigma_t) or t, fed to the Fourier
            features as is. Required iff ``conditional``.
        feature_divisor : torch.Tensor or None
            Optional (B,) positive values by which the last feature map is
            divided before the final 1x1 convolution (SGMSE+ divides by
            sigma_t there). None leaves the output raw.

        Returns
        -------
        torch.Tensor
            (B, out_channels, F, T), in the dtype of ``x``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.is_complex():
            raise ValueError(
                "x must be a real tensor of shape (B, in_channels="
                f"{self.in_channels}, F, T), got {tuple(x.shape)} of dtype "
                f"{x.dtype}; stack real and imaginary parts as channels."
            )
        batch, _, n_freqs, n_frames = x.shape
        multiple = self.unet_multiple
        if n_freqs % multiple:
            raise ValueError(
                f"The frequency size F={n_freqs} must be a multiple of "
                f"{multiple} (unet_multiple = patch_size * 2**(levels-1)); "
                "use n_fft = 510 (F = 256) or crop/pad the frequency axis."
            )
        emb = self._embed(cond, batch)
        pad = (-n_frames) % multiple
        h = F.pad(x, (0, pad)) if pad else x
        if self.patch_size > 1:
            h = F.pixel_unshuffle(h, self.patch_size)
        h = self._unet(h, emb)
        if feature_divisor is not None:
            divisor = torch.as_tensor(feature_divisor, device=h.device)
            h = h / divisor.reshape(-1, 1, 1, 1).to(h.dtype)
        h = self.output_layer(h)
        if self.patch_size > 1:
            h = F.pixel_shuffle(h, self.patch_size)
        return h[..., :n_frames].to(x.dtype)

    def _unet(self, x, emb):
        """Run the U-Net on the padded, patch-folded input."""
        pyramid = x
        h = self.input_conv(x)
        skips = [h]
        for level in range(self.num_levels):
            attns = self.down_attn[level]
            for i, block in enumerate(self.down_blocks[level]):
                h = block(h, emb)
                if len(attns):
                    h = attns[i](h)
                skips.append(h)
            if level == self.num_levels - 1:
                break
            h = self._resample(self.down_resample[level], h, emb)
            if self.progressive_input == "input_skip":
                pyramid = self.pyramid_down(pyramid)
                h = self.down_pyramid[level](pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = self._residual(self.down_pyramid[level](pyramid), h)
                h = pyramid
            skips.append(h)

        h = self.mid_block_0(h, emb)
        h = self.mid_attn(h)
        h = self.mid_block_1(h, emb)

        pyramid = None
        for step, level in enumerate(reversed(range(self.num_levels))):
            for block in self.up_blocks[step]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            for attn in self.up_attn[step]:
                h = attn(h)
            if self.progressive == "output_skip":
                out = self.up_pyramid[step](h)
                if pyramid is None:
                    pyramid = out
                else:
                    pyramid = self.pyramid_up(pyramid) + out
            elif self.progressive == "residual":
                if pyramid is None:
                    pyramid = self.up_pyramid[step](h)
                else:
                    pyramid = self._residual(self.up_pyramid[step](pyramid), h)
                    h = pyramid
            if level != 0:
                h = self._resample(self.up_resample[step], h, emb)

        if self.progressive == "output_skip":
            return pyramid
        return self.final(h)

    def _resample(self, module, h, emb):
        """Apply a resampling residual block or a resampling convolution."""
        if isinstance(module, FIRConv2d):
            return module(h)
        return module(h, emb)

    def _residual(self, a, b):
        """Sum two maps, rescaled by 1/sqrt(2) if ``skip_rescale``."""
        return (a + b) * _SQRT_HALF if self.skip_rescale else a + b
