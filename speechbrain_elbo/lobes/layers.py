"""Building blocks of the NCSN++ family of U-Nets, in plain PyTorch.

The blocks follow the NCSN++ architecture of Song et al. (2021) as used by
SGMSE+ and StoRM: FIR (finite impulse response) up- and down-sampling from
StyleGAN2, BigGAN- and DDPM-style residual blocks, single-head self-attention
over all time-frequency positions, Gaussian Fourier features for the noise
level, and skip combiners. Everything is written with ordinary tensor
operations (grouped convolutions for the FIR filters), so the same code runs
on CPU and GPU and under ``torch.autocast``; nothing needs to be compiled.

Parameter counts match the reference implementation block for block, which
is what makes the full configurations land on the published totals.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def default_init_(weight, scale=1.0):
    """Initialise ``weight`` in place with the DDPM default initialiser.

    This is a uniform variance-scaling initialiser with "fan_avg" mode,
    i.e. Glorot-uniform with gain ``sqrt(scale)``. As in the reference code, a
    scale of exactly 0 is replaced by 1e-10 so that the layer starts (almost)
    at zero but still receives gradients through its own input.

    Arguments
    ---------
    weight : torch.Tensor
        A weight of shape (out, in, ...) to overwrite.
    scale : float
        Variance scale; 1.0 is Glorot-uniform.

    Returns
    -------
    torch.Tensor
        ``weight``, for chaining.

    Example
    -------
    >>> w = default_init_(torch.empty(8, 4, 3, 3), scale=1.0)
    >>> bound = math.sqrt(6 / (4 * 9 + 8 * 9))
    >>> bool(w.abs().max() <= bound)
    True
    """
    scale = 1e-10 if scale == 0 else scale
    with torch.no_grad():
        return nn.init.xavier_uniform_(weight, gain=math.sqrt(scale))


def conv2d(in_ch, out_ch, kernel_size=3, init_scale=1.0, bias=True):
    """Build a stride-1, same-padded ``nn.Conv2d`` with DDPM initialisation.

    Arguments
    ---------
    in_ch : int
        Input channels.
    out_ch : int
        Output channels.
    kernel_size : int
        Odd kernel size (1 or 3 in NCSN++).
    init_scale : float
        Variance scale of :func:`default_init_` (0 gives a near-zero layer).
    bias : bool
        Whether the convolution has a (zero-initialised) bias.

    Returns
    -------
    torch.nn.Conv2d
        The convolution.

    Example
    -------
    >>> conv = conv2d(4, 8, kernel_size=3)
    >>> conv(torch.zeros(1, 4, 5, 7)).shape
    torch.Size([1, 8, 5, 7])
    """
    conv = nn.Conv2d(
        in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias
    )
    default_init_(conv.weight, init_scale)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def group_norm(channels):
    """GroupNorm with ``min(channels // 4, 32)`` groups and eps 1e-6.

    Arguments
    ---------
    channels : int
        Number of channels (at least 4).

    Returns
    -------
    torch.nn.GroupNorm
        The normalisation layer.

    Example
    -------
    >>> group_norm(512).num_groups, group_norm(16).num_groups
    (32, 4)
    """
    if channels < 4:
        raise ValueError(
            f"GroupNorm uses min(C // 4, 32) groups and needs C >= 4, got "
            f"C={channels}; use at least 4 channels (e.g. a larger nf)."
        )
    groups = min(channels // 4, 32)
    if channels % groups:
        raise ValueError(
            f"GroupNorm uses min(C // 4, 32) = {groups} groups, which does not "
            f"divide C={channels}; choose nf and ch_mult so that every channel "
            "count (including encoder + skip sums) is a multiple of 32 (for "
            "C >= 128) or of C // 4, e.g. nf a multiple of 32."
        )
    return nn.GroupNorm(groups, channels, eps=1e-6)


_ACTIVATIONS = {
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "lrelu": lambda: nn.LeakyReLU(negative_slope=0.2),
}


def get_activation(name):
    """Return the activation module called ``name``.

    Arguments
    ---------
    name : str
        One of "swish" (= "silu"), "relu", "elu", "lrelu".

    Returns
    -------
    torch.nn.Module
        The activation.

    Example
    -------
    >>> get_activation("swish")
    SiLU()
    """
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"Unknown nonlinearity {name!r}; choose one of "
            f"{sorted(_ACTIVATIONS)}."
        )
    return _ACTIVATIONS[key]()


def fir_kernel_2d(taps):
    """Normalised 2-D FIR kernel: the outer product of 1-D ``taps``.

    Arguments
    ---------
    taps : sequence of float
        Symmetric-or-not 1-D filter taps of even length >= 2, such as
        (1, 3, 3, 1) (a binomial low-pass) or (1, 1) (box filter).

    Returns
    -------
    torch.Tensor
        Float32 kernel of shape (K, K) summing to 1.

    Example
    -------
    >>> fir_kernel_2d((1, 3, 3, 1))[0]
    tensor([0.0156, 0.0469, 0.0469, 0.0156])
    >>> float(fir_kernel_2d((1, 3, 3, 1)).sum())
    1.0
    """
    if isinstance(taps, torch.Tensor):
        taps = taps.tolist()
    if not isinstance(taps, Sequence) or len(taps) < 2 or len(taps) % 2:
        raise ValueError(
            "fir_kernel must be a 1-D sequence of even length >= 2 (e.g. "
            f"[1, 3, 3, 1]) for factor-2 resampling, got {taps!r}."
        )
    k = torch.tensor([float(v) for v in taps], dtype=torch.float64)
    if k.sum() == 0:
        raise ValueError(f"fir_kernel taps must not sum to zero: {taps!r}.")
    k2 = torch.outer(k, k)
    return (k2 / k2.sum()).to(torch.float32)


class FIRResample2d(nn.Module):
    """Factor-2 FIR up- or down-sampling of both spatial axes.

    Equivalent to StyleGAN2's ``upsample_2d`` / ``downsample_2d`` (upfirdn2d
    with zero-padded borders): down-sampling low-pass filters and keeps every
    second sample; up-sampling inserts zeros and filters with the kernel
    times 4, so a constant input stays constant away from the borders. Each
    channel is filtered independently with one grouped (depthwise)
    convolution; no compiled extension is involved.

    Arguments
    ---------
    direction : str
        "up" (H, W -> 2H, 2W) or "down" (H, W -> H/2, W/2; H, W even).
    fir_kernel : sequence of float
        1-D taps of even length; the 2-D kernel is their outer product.

    Example
    -------
    >>> up = FIRResample2d("up")
    >>> down = FIRResample2d("down")
    >>> x = torch.ones(2, 3, 8, 6)
    >>> up(x).shape, down(x).shape
    (torch.Size([2, 3, 16, 12]), torch.Size([2, 3, 4, 3]))
    >>> float(up(x)[0, 0, 4, 4]), float(down(x)[0, 0, 2, 1])
    (1.0, 1.0)
    """

    def __init__(self, direction, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        if direction not in ("up", "down"):
            raise ValueError(
                f"direction must be 'up' or 'down', got {direction!r}."
            )
        self.direction = direction
        kernel = fir_kernel_2d(fir_kernel)
        self.taps = kernel.shape[0]
        if direction == "up":
            # Zero insertion followed by filtering with gain 4 is a
            # transposed convolution with stride 2.
            kernel = kernel * 4.0
            self.padding = self.taps // 2 - 1
        else:
            # upfirdn2d convolves (flipped kernel); conv2d correlates.
            kernel = torch.flip(kernel, (0, 1))
            self.padding = self.taps // 2 - 1
        self.register_buffer("kernel", kernel[None, None], persistent=False)

    def forward(self, x):
        """Resample ``x`` of shape (B, C, H, W).

        Arguments
        ---------
        x : torch.Tensor
            Real input of shape (B, C, H, W).

        Returns
        -------
        torch.Tensor
            (B, C, 2H, 2W) for "up", (B, C, H/2, W/2) for "down".
        """
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)
        if self.direction == "up":
            return F.conv_transpose2d(
                x, weight, stride=2, padding=self.padding, groups=channels
            )
        return F.conv2d(
            x, weight, stride=2, padding=self.padding, groups=channels
        )

    def extra_repr(self):
        """Describe the module in ``print(module)``."""
        return f"{self.direction}, taps={self.taps}"


class FIRConv2d(nn.Module):
    """3x3 convolution fused with factor-2 FIR up- or down-sampling.

    This is StyleGAN2's ``upsample_conv_2d`` / ``conv_downsample_2d``: the
    down-sampling version low-passes the input once and applies a stride-2
    convolution; the up-sampling version applies a stride-2 transposed
    convolution and then low-passes. It has the parameters of an ordinary
    3x3 convolution (weight and bias).

    Arguments
    ---------
    in_ch : int
        Input channels.
    out_ch : int
        Output channels.
    direction : str
        "up" or "down".
    fir_kernel : sequence of float
        1-D taps of even length.
    init_scale : float
        Variance scale of the weight initialisation.

    Example
    -------
    >>> conv = FIRConv2d(4, 6, "down")
    >>> conv(torch.randn(1, 4, 8, 10)).shape
    torch.Size([1, 6, 4, 5])
    >>> FIRConv2d(4, 6, "up")(torch.randn(1, 4, 8, 10)).shape
    torch.Size([1, 6, 16, 20])
    """

    def __init__(
        self, in_ch, out_ch, direction, fir_kernel=(1, 3, 3, 1), init_scale=1.0
    ):
        super().__init__()
        if direction not in ("up", "down"):
            raise ValueError(
                f"direction must be 'up' or 'down', got {direction!r}."
            )
        self.direction = direction
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        default_init_(self.weight, init_scale)
        kernel = fir_kernel_2d(fir_kernel)
        taps = kernel.shape[0]
        if direction == "up":
            kernel = kernel * 4.0
        # Symmetric padding of the FIR stage for 3x3 convolutions: the
        # transposed convolution adds 3 - 2 = 1 sample that the filter
        # trims; the stride-2 convolution needs the same one sample extra.
        self.fir_padding = taps // 2 - 1 if direction == "up" else taps // 2
        kernel = torch.flip(kernel, (0, 1))
        self.register_buffer("kernel", kernel[None, None], persistent=False)

    def forward(self, x):
        """Convolve and resample ``x`` of shape (B, C_in, H, W).

        Arguments
        ---------
        x : torch.Tensor
            Real input of shape (B, C_in, H, W).

        Returns
        -------
        torch.Tensor
            (B, C_out, 2H, 2W) for "up", (B, C_out, H/2, W/2) for "down".
        """
        weight = self.weight.to(x.dtype)
        if self.direction == "up":
            # conv_transpose2d takes (in, out, kh, kw); flipping the kernel
            # makes it the adjoint of the stride-2 correlation.
            h = F.conv_transpose2d(
                x, weight.transpose(0, 1).flip(-1, -2), stride=2
            )
            channels = h.shape[1]
            fir = self.kernel.to(h.dtype).expand(channels, 1, -1, -1)
            h = F.conv2d(h, fir, padding=self.fir_padding, groups=channels)
        else:
            channels = x.shape[1]
            fir = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)
            h = F.conv2d(x, fir, padding=self.fir_padding, groups=channels)
            h = F.conv2d(h, weight, stride=2)
        return h + self.bias.to(h.dtype)[None, :, None, None]


class GaussianFourierProjection(nn.Module):
    """Gaussian random Fourier features of a scalar (noise level or time).

    ``[sin(2 pi c w), cos(2 pi c w)]`` with fixed frequencies
    ``w ~ N(0, scale^2)``. The frequencies are a parameter with
    ``requires_grad=False`` (as in NCSN++), so they are saved in checkpoints
    and counted in the parameter total, but never trained.

    Arguments
    ---------
    embedding_size : int
        Number of frequencies; the output has twice as many features.
    scale : float
        Standard deviation of the frequencies.

    Example
    -------
    >>> proj = GaussianFourierProjection(8, scale=16.0)
    >>> proj(torch.tensor([0.0, 0.5])).shape
    torch.Size([2, 16])
    >>> proj(torch.zeros(1))[0, 8:].tolist() == [1.0] * 8
    True
    """

    def __init__(self, embedding_size=256, scale=1.0):
        super().__init__()
        self.W = nn.Parameter(
            torch.randn(embedding_size) * scale, requires_grad=False
        )

    def forward(self, cond):
        """Embed ``cond`` of shape (B,) into (B, 2 * embedding_size)."""
        proj = cond.to(self.W.dtype)[:, None] * self.W[None, :]
        proj = proj * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class Combine(nn.Module):
    """Merge the input pyramid into the feature map (progressive input).

    A 1x1 convolution brings the pyramid to the feature channels, then the
    two are summed ("sum") or concatenated ("cat").

    Arguments
    ---------
    pyramid_ch : int
        Channels of the pyramid (the network input channels).
    feature_ch : int
        Channels of the feature map.
    method : str
        "sum" or "cat".

    Example
    -------
    >>> comb = Combine(4, 16, method="cat")
    >>> comb(torch.randn(1, 4, 8, 8), torch.randn(1, 16, 8, 8)).shape
    torch.Size([1, 32, 8, 8])
    """

    def __init__(self, pyramid_ch, feature_ch, method="sum"):
        super().__init__()
        if method not in ("sum", "cat"):
            raise ValueError(
                f"progressive_combine must be 'sum' or 'cat', got {method!r}."
            )
        self.conv = conv2d(pyramid_ch, feature_ch, kernel_size=1)
        self.method = method

    def forward(self, pyramid, h):
        """Combine ``pyramid`` (B, P, H, W) with ``h`` (B, C, H, W)."""
        projected = self.conv(pyramid)
        if self.method == "cat":
            return torch.cat([projected, h], dim=1)
        return projected + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map.

    GroupNorm, 1x1 query/key/value projections, softmax attention with
    scale ``C ** -0.5`` over the H * W positions, a 1x1 output projection and
    a residual connection (optionally rescaled by 1/sqrt(2)). Computed with
    ``torch.nn.functional.scaled_dot_product_attention``.

    Arguments
    ---------
    channels : int
        Channels of the feature map.
    skip_rescale : bool
        Divide the residual sum by sqrt(2).
    init_scale : float
        Initialisation scale of the output projection (0: starts near
        the identity).

    Example
    -------
    >>> attn = AttnBlock(16)
    >>> attn(torch.randn(2, 16, 4, 6)).shape
    torch.Size([2, 16, 4, 6])
    """

    def __init__(self, channels, skip_rescale=True, init_scale=0.0):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        for chunk in self.qkv.weight.data.chunk(3, dim=0):
            default_init_(chunk, 0.1)
        nn.init.zeros_(self.qkv.bias)
        self.proj = conv2d(channels, channels, 1, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x):
        """Attend over the (H, W) positions of ``x`` (B, C, H, W)."""
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x))
        # (B, 3C, H, W) -> three (B, 1, HW, C) tensors (one head).
        qkv = qkv.reshape(batch, 3, channels, height * width)
        q, k, v = qkv.transpose(-1, -2).unsqueeze(2).unbind(dim=1)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.squeeze(1).transpose(-1, -2)
        h = self.proj(h.reshape(batch, channels, height, width))
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out


class ResBlockBigGAN(nn.Module):
    """BigGAN-style residual block, optionally resampling by a factor 2.

    ``GN -> act -> [FIR resample] -> conv3x3 -> + dense(emb) -> GN -> act ->
    dropout -> conv3x3``, plus a shortcut that is resampled the same way and
    projected by a 1x1 convolution when the channels change or the block
    resamples.

    Arguments
    ---------
    in_ch : int
        Input channels.
    out_ch : int or None
        Output channels (default: ``in_ch``).
    emb_dim : int or None
        Size of the conditioning embedding; None builds no dense layer.
    up : bool
        Up-sample by 2.
    down : bool
        Down-sample by 2.
    dropout : float
        Dropout probability before the second convolution.
    fir_kernel : sequence of float
        FIR taps used for resampling.
    skip_rescale : bool
        Divide the residual sum by sqrt(2).
    init_scale : float
        Initialisation scale of the second convolution.
    nonlinearity : str
        Activation name, see :func:`get_activation`.

    Example
    -------
    >>> block = ResBlockBigGAN(8, 16, emb_dim=32, down=True)
    >>> block(torch.randn(2, 8, 8, 8), torch.randn(2, 32)).shape
    torch.Size([2, 16, 4, 4])
    """

    def __init__(
        self,
        in_ch,
        out_ch=None,
        emb_dim=None,
        up=False,
        down=False,
        dropout=0.0,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale=True,
        init_scale=0.0,
        nonlinearity="swish",
    ):
        super().__init__()
        if up and down:
            raise ValueError(
                "A residual block cannot both up- and down-sample."
            )
        out_ch = out_ch or in_ch
        self.act = get_activation(nonlinearity)
        self.norm_0 = group_norm(in_ch)
        self.resample = None
        if up or down:
            self.resample = FIRResample2d("up" if up else "down", fir_kernel)
        self.conv_0 = conv2d(in_ch, out_ch, 3)
        self.dense = None
        if emb_dim is not None:
            self.dense = nn.Linear(emb_dim, out_ch)
            default_init_(self.dense.weight)
            nn.init.zeros_(self.dense.bias)
        self.norm_1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv_1 = conv2d(out_ch, out_ch, 3, init_scale=init_scale)
        self.shortcut = None
        if in_ch != out_ch or up or down:
            self.shortcut = conv2d(in_ch, out_ch, 1)
        self.skip_rescale = skip_rescale

    def forward(self, x, emb=None):
        """Apply the block to ``x`` (B, C, H, W) with activated ``emb``.

        Arguments
        ---------
        x : torch.Tensor
            Feature map (B, in_ch, H, W).
        emb : torch.Tensor or None
            Conditioning embedding (B, emb_dim), already passed through the
            nonlinearity; required iff the block was built with ``emb_dim``.

        Returns
        -------
        torch.Tensor
            Feature map (B, out_ch, H', W').
        """
        h = self.act(self.norm_0(x))
        if self.resample is not None:
            h = self.resample(h)
            x = self.resample(x)
        h = self.conv_0(h)
        if self.dense is not None:
            h = h + self.dense(emb)[:, :, None, None]
        h = self.act(self.norm_1(h))
        h = self.conv_1(self.dropout(h))
        if self.shortcut is not None:
            x = self.shortcut(x)
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out


class ResBlockDDPM(nn.Module):
    """DDPM-style residual block (no resampling; see :class:`FIRConv2d`).

    ``GN -> act -> conv3x3 -> + dense(emb) -> GN -> act -> dropout ->
    conv3x3`` plus a 1x1 projection of the shortcut when channels change.

    Arguments
    ---------
    in_ch : int
        Input channels.
    out_ch : int or None
        Output channels (default: ``in_ch``).
    emb_dim : int or None
        Size of the conditioning embedding; None builds no dense layer.
    dropout : float
        Dropout probability before the second convolution.
    skip_rescale : bool
        Divide the residual sum by sqrt(2).
    init_scale : float
        Initialisation scale of the second convolution.
    nonlinearity : str
        Activation name, see :func:`get_activation`.

    Example
    -------
    >>> block = ResBlockDDPM(8, 16)
    >>> block(torch.randn(2, 8, 6, 6)).shape
    torch.Size([2, 16, 6, 6])
    """

    def __init__(
        self,
        in_ch,
        out_ch=None,
        emb_dim=None,
        dropout=0.0,
        skip_rescale=True,
        init_scale=0.0,
        nonlinearity="swish",
    ):
        super().__init__()
        out_ch = out_ch or in_ch
        self.act = get_activation(nonlinearity)
        self.norm_0 = group_norm(in_ch)
        self.conv_0 = conv2d(in_ch, out_ch, 3)
        self.dense = None
        if emb_dim is not None:
            self.dense = nn.Linear(emb_dim, out_ch)
            default_init_(self.dense.weight)
            nn.init.zeros_(self.dense.bias)
        self.norm_1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv_1 = conv2d(out_ch, out_ch, 3, init_scale=init_scale)
        self.shortcut = None
        if in_ch != out_ch:
            self.shortcut = conv2d(in_ch, out_ch, 1, init_scale=0.1)
        self.skip_rescale = skip_rescale

    def forward(self, x, emb=None):
        """Apply the block; arguments as :meth:`ResBlockBigGAN.forward`."""
        h = self.conv_0(self.act(self.norm_0(x)))
        if self.dense is not None:
            h = h + self.dense(emb)[:, :, None, None]
        h = self.act(self.norm_1(h))
        h = self.conv_1(self.dropout(h))
        if self.shortcut is not None:
            x = self.shortcut(x)
        out = x + h
        return out * _SQRT_HALF if self.skip_rescale else out
