"""Waveform <-> compressed complex spectrogram as in SGMSE+ (docs/method.md §1).

The representation is a complex STFT (n_fft 510 -> 256 bins, hop 128,
periodic Hann window, centred frames) with amplitude compression
``c(X) = beta |X|^alpha exp(j angle X)``. Waveforms are normalised by the
peak of the noisy signal; the scale is returned so that the caller can undo
it. All of it runs in float32, also under ``torch.autocast``.

Example
-------
>>> transform = SpectralTransform()
>>> wav = torch.randn(2, 16000)
>>> spec = transform.encode(wav)
>>> spec.shape, spec.dtype
(torch.Size([2, 1, 256, 126]), torch.complex64)
>>> back = transform.decode(spec, length=16000)
>>> bool((back - wav).abs().max() < 1e-4)
True
"""

import torch

__all__ = [
    "SpectralTransform",
    "peak_normalize",
    "pad_frames",
    "crop_frames",
    "frame_mask",
    "sample_mask",
]


class SpectralTransform:
    """Compressed complex STFT and its exact inverse (docs/method.md §1).

    Arguments
    ---------
    n_fft : int
        FFT size; ``n_fft // 2 + 1`` frequency bins (256 for 510).
    hop_length : int
        Frame shift in samples.
    alpha : float
        Amplitude compression exponent, in (0, 1].
    beta : float
        Amplitude compression scale, > 0.

    Example
    -------
    >>> transform = SpectralTransform(alpha=0.5, beta=0.15)
    >>> transform.num_frames(32640)
    256
    >>> X = torch.tensor([[[[4.0 + 0.0j]]]])
    >>> transform.compress(X)
    tensor([[[[0.3000+0.j]]]])
    >>> transform.decompress(transform.compress(X))
    tensor([[[[4.+0.j]]]])
    """

    def __init__(self, n_fft=510, hop_length=128, alpha=0.5, beta=0.15):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}.")
        if beta <= 0.0:
            raise ValueError(f"beta must be positive, got {beta}.")
        if hop_length <= 0 or hop_length > n_fft:
            raise ValueError(
                f"hop_length must lie in [1, n_fft={n_fft}], got {hop_length}."
            )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.alpha = alpha
        self.beta = beta
        self._windows = {}

    @property
    def num_bins(self):
        """Number of frequency bins F."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples):
        """Number of STFT frames for a waveform of ``num_samples``."""
        return num_samples // self.hop_length + 1

    def _window(self, device):
        key = str(device)
        if key not in self._windows:
            self._windows[key] = torch.hann_window(
                self.n_fft, periodic=True, device=device
            )
        return self._windows[key]

    def stft(self, wav):
        """Complex STFT of a batch of waveforms.

        Arguments
        ---------
        wav : torch.Tensor
            Real waveforms, shape (B, L).

        Returns
        -------
        torch.Tensor
            Complex64 spectrogram, shape (B, 1, F, T).
        """
        _check_waveform_batch(wav)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            spec = torch.stft(
                wav.float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self._window(wav.device),
                center=True,
                return_complex=True,
            )
        return spec.unsqueeze(1)

    def istft(self, spec, length):
        """Inverse of :meth:`stft`, cropped to ``length`` samples.

        Arguments
        ---------
        spec : torch.Tensor
            Complex spectrogram, shape (B, 1, F, T).
        length : int
            Number of output samples.

        Returns
        -------
        torch.Tensor
            Float32 waveforms, shape (B, length).
        """
        _check_spectrogram(spec, self.num_bins)
        with torch.autocast(device_type=spec.device.type, enabled=False):
            return torch.istft(
                spec.squeeze(1).to(torch.complex64),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self._window(spec.device),
                center=True,
                length=length,
            )

    def compress(self, spec):
        """Amplitude compression ``beta |X|^alpha exp(j angle X)``."""
        magnitude = spec.abs().clamp_min(torch.finfo(torch.float32).tiny)
        return spec * (self.beta * magnitude ** (self.alpha - 1.0))

    def decompress(self, spec):
        """Inverse compression ``(|C| / beta)^(1/alpha) exp(j angle C)``.

        Written as ``C |C|^(1/alpha - 1) / beta^(1/alpha)``, which has a
        finite gradient everywhere for alpha <= 1.
        """
        exponent = 1.0 / self.alpha
        return spec * spec.abs() ** (exponent - 1.0) / self.beta**exponent

    def encode(self, wav, lengths=None):
        """Waveforms (B, L) -> compressed spectrograms (B, 1, F, T).

        Arguments
        ---------
        wav : torch.Tensor
            Real waveforms, shape (B, L).
        lengths : torch.Tensor, optional
            SpeechBrain relative lengths (B,); samples past each length are
            zeroed before the transform.

        Returns
        -------
        torch.Tensor
            Complex64 compressed spectrogram.
        """
        if lengths is not None:
            wav = _zero_padding(wav, lengths)
        return self.compress(self.stft(wav))

    def decode(self, spec, length, lengths=None):
        """Compressed spectrograms (B, 1, F, T) -> waveforms (B, length).

        Arguments
        ---------
        spec : torch.Tensor
            Complex compressed spectrogram.
        length : int
            Number of samples of the (padded) output.
        lengths : torch.Tensor, optional
            SpeechBrain relative lengths (B,); samples past each length are
            set to zero.

        Returns
        -------
        torch.Tensor
            Float32 waveforms.
        """
        wav = self.istft(self.decompress(spec), length)
        if lengths is not None:
            wav = _zero_padding(wav, lengths)
        return wav


def peak_normalize(noisy, clean=None, lengths=None):
    """Divide noisy (and clean) waveforms by the noisy peak (docs/method.md §1).

    Arguments
    ---------
    noisy : torch.Tensor
        Noisy waveforms (B, L).
    clean : torch.Tensor, optional
        Clean waveforms (B, L), scaled by the same factor.
    lengths : torch.Tensor, optional
        Relative lengths (B,): the peak is taken over the valid samples.

    Returns
    -------
    noisy : torch.Tensor
        ``noisy / scale``.
    clean : torch.Tensor or None
        ``clean / scale``.
    scale : torch.Tensor
        Shape (B, 1): multiply the enhanced waveform by it to undo.

    Example
    -------
    >>> noisy = torch.tensor([[0.5, -2.0, 1.0]])
    >>> clean = torch.tensor([[0.5, -1.0, 0.0]])
    >>> n, c, scale = peak_normalize(noisy, clean)
    >>> n
    tensor([[ 0.2500, -1.0000,  0.5000]])
    >>> c, scale
    (tensor([[ 0.2500, -0.5000,  0.0000]]), tensor([[2.]]))
    """
    _check_waveform_batch(noisy)
    valid = noisy
    if lengths is not None:
        valid = _zero_padding(noisy, lengths)
    scale = valid.abs().amax(dim=-1, keepdim=True)
    if not torch.isfinite(scale).all():
        raise ValueError(
            "The noisy waveform contains NaN or Inf samples: clean the input "
            "(e.g. torch.nan_to_num) before enhancement."
        )
    if (scale == 0).any():
        bad = torch.nonzero(scale.squeeze(-1) == 0).flatten().tolist()
        raise ValueError(
            f"Noisy waveform(s) at batch index {bad} are silent (all zeros): "
            "there is nothing to enhance; remove them from the batch."
        )
    clean = None if clean is None else clean / scale
    return noisy / scale, clean, scale


def pad_frames(spec, multiple, mode="zeros"):
    """Pad the frame axis of (B, C, F, T) up to a multiple of ``multiple``.

    Arguments
    ---------
    spec : torch.Tensor
        Real or complex (B, C, F, T).
    multiple : int
        The frame count to pad to a multiple of.
    mode : str
        ``"zeros"``, or ``"reflection"`` (the last frames mirrored about
        the last one, as sgmse pads its 48 kHz model's inputs; an input
        shorter than its padding is mirrored again, as often as needed).

    Returns
    -------
    padded : torch.Tensor
        Shape (B, C, F, T') with T' the smallest multiple >= T.
    num_frames : int
        The original T, for :func:`crop_frames`.

    Example
    -------
    >>> spec = torch.ones(1, 1, 4, 5)
    >>> padded, n = pad_frames(spec, 4)
    >>> padded.shape, n
    (torch.Size([1, 1, 4, 8]), 5)
    >>> crop_frames(padded, n).shape
    torch.Size([1, 1, 4, 5])
    >>> frames = torch.arange(3.0).reshape(1, 1, 1, 3)
    >>> pad_frames(frames, 8, mode="reflection")[0].flatten().tolist()
    [0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0]
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}.")
    if mode not in ("zeros", "reflection"):
        raise ValueError(f"mode must be 'zeros' or 'reflection', got {mode!r}.")
    num_frames = spec.shape[-1]
    extra = (-num_frames) % multiple
    if mode == "zeros":
        if extra:
            spec = torch.nn.functional.pad(spec, (0, extra))
        return spec, num_frames
    while extra:
        # a reflection adds at most T - 1 frames (T = 1: a repetition)
        step = min(extra, max(spec.shape[-1] - 1, 1))
        if spec.shape[-1] == 1:
            tail = spec
        else:
            tail = spec[..., -1 - step : -1].flip(-1)
        spec = torch.cat([spec, tail], dim=-1)
        extra -= step
    return spec, num_frames


def crop_frames(spec, num_frames):
    """Undo :func:`pad_frames`: keep the first ``num_frames`` frames."""
    return spec[..., :num_frames]


def sample_mask(lengths, num_samples):
    """Float mask (B, L) that is 1 on the valid samples of a padded batch.

    Example
    -------
    >>> sample_mask(torch.tensor([1.0, 0.5]), 4)
    tensor([[1., 1., 1., 1.],
            [1., 1., 0., 0.]])
    """
    valid = torch.round(lengths * num_samples).long()
    positions = torch.arange(num_samples, device=lengths.device)
    return (positions.unsqueeze(0) < valid.unsqueeze(1)).float()


def frame_mask(lengths, num_samples, hop_length=128):
    """Float mask (B, 1, 1, T) that is 1 on the frames of the valid samples.

    ``num_samples`` is the padded waveform length the spectrogram was computed
    from. An utterance of ``n`` valid samples owns its first
    ``n // hop_length + 1`` frames, as many as its unpadded STFT has.

    Example
    -------
    >>> frame_mask(torch.tensor([1.0, 0.5]), 8, hop_length=2).squeeze()
    tensor([[1., 1., 1., 1., 1.],
            [1., 1., 1., 0., 0.]])
    """
    num_frames = num_samples // hop_length + 1
    valid = torch.round(lengths * num_samples).long()
    owned = torch.div(valid, hop_length, rounding_mode="floor") + 1
    frames = torch.arange(num_frames, device=lengths.device)
    mask = frames.unsqueeze(0) < owned.unsqueeze(1)
    return mask.float()[:, None, None, :]


def _zero_padding(wav, lengths):
    # torch.where, not a product: NaN or Inf in the padding must vanish too
    valid = sample_mask(lengths, wav.shape[-1]).bool()
    return torch.where(valid, wav, torch.zeros((), dtype=wav.dtype))


def _check_waveform_batch(wav):
    if not torch.is_tensor(wav) or wav.dim() != 2:
        shape = tuple(wav.shape) if torch.is_tensor(wav) else type(wav)
        raise ValueError(
            f"Expected a batch of mono waveforms of shape (batch, samples), "
            f"got {shape}. Add a batch axis with wav.unsqueeze(0); mix "
            "multi-channel audio down to mono first."
        )
    if wav.is_complex():
        raise ValueError("Waveforms must be real, got a complex tensor.")


def _check_spectrogram(spec, num_bins):
    if spec.dim() != 4 or spec.shape[1] != 1 or spec.shape[2] != num_bins:
        raise ValueError(
            f"Expected a complex spectrogram of shape (batch, 1, {num_bins}, "
            f"frames), got {tuple(spec.shape)}."
        )
