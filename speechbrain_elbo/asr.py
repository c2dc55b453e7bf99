"""Enhancement before speech recognition.

:class:`EnhanceThenTranscribe` chains a
:class:`~speechbrain_elbo.inference.DiffusionEnhancement` with any SpeechBrain
ASR interface that has ``transcribe_batch(wavs, wav_lens)`` (``EncoderASR``,
``EncoderDecoderASR``, ``WhisperASR``...). It enhances the batch, resamples
it to the recogniser's sample rate when the two differ, recomputes the
relative lengths for the resampled padding, and hands both over.

Example
-------
>>> class Identity:
...     sample_rate = 16000
...     def enhance_batch(self, wavs, lengths=None, **options):
...         return wavs
>>> class CountingASR:
...     class audio_normalizer:
...         sample_rate = 8000
...     def transcribe_batch(self, wavs, wav_lens):
...         return [f"{len(wavs[0])} {wav_lens.tolist()}"], None
>>> chain = EnhanceThenTranscribe(Identity(), CountingASR())
>>> words, _ = chain.transcribe_batch(torch.randn(2, 1600),
...                                   torch.tensor([1.0, 0.5]))
>>> words
['800 [1.0, 0.5]']
"""

import pathlib

import torch

__all__ = [
    "EnhanceThenTranscribe",
    "asr_sample_rate",
    "resample_batch",
]


def asr_sample_rate(asr):
    """The sample rate a SpeechBrain ASR interface expects, in Hz.

    Taken from ``asr.hparams.sample_rate`` when the model defines it, else
    from its ``audio_normalizer`` (SpeechBrain's default: 16 kHz).

    Example
    -------
    >>> from types import SimpleNamespace
    >>> asr_sample_rate(SimpleNamespace(hparams=SimpleNamespace(
    ...     sample_rate=8000)))
    8000
    """
    hparams = getattr(asr, "hparams", None)
    rate = getattr(hparams, "sample_rate", None)
    if rate is None:
        normalizer = getattr(asr, "audio_normalizer", None)
        rate = getattr(normalizer, "sample_rate", None)
    if rate is None:
        raise ValueError(
            f"Cannot tell the sample rate {type(asr).__name__} expects: it "
            "has neither hparams.sample_rate nor audio_normalizer."
        )
    return int(rate)


def resample_batch(wavs, lengths, orig_rate, new_rate):
    """Resample a padded batch and recompute its relative lengths.

    Each utterance of ``n`` valid samples has ``ceil(n new/orig)`` valid
    samples after resampling; its relative length is that over the new
    padded length, and the samples past it are zeroed (resampling smears
    the padding boundary).

    Arguments
    ---------
    wavs : torch.Tensor
        (B, L) waveforms.
    lengths : torch.Tensor
        (B,) relative lengths.
    orig_rate, new_rate : int
        Sample rates in Hz.

    Returns
    -------
    wavs : torch.Tensor
        (B, L') resampled waveforms.
    lengths : torch.Tensor
        (B,) relative lengths with respect to L'.

    Example
    -------
    >>> wavs, lens = resample_batch(torch.randn(2, 16000),
    ...                             torch.tensor([1.0, 0.5]), 16000, 8000)
    >>> wavs.shape, lens
    (torch.Size([2, 8000]), tensor([1.0000, 0.5000]))
    """
    if int(orig_rate) == int(new_rate):
        return wavs, lengths
    import torchaudio.functional as AF

    num_samples = wavs.shape[-1]
    resampled = AF.resample(wavs, int(orig_rate), int(new_rate))
    new_total = resampled.shape[-1]
    valid = torch.round(lengths.double() * num_samples)
    new_valid = torch.ceil(valid * int(new_rate) / int(orig_rate))
    new_valid = new_valid.clamp(max=new_total)
    positions = torch.arange(new_total, device=resampled.device)
    keep = positions[None] < new_valid.to(resampled.device)[:, None]
    resampled = resampled * keep
    return resampled, (new_valid / new_total).to(lengths.dtype)


class EnhanceThenTranscribe:
    """Enhance a batch, then transcribe it with a SpeechBrain ASR model.

    Arguments
    ---------
    enhancer : speechbrain_elbo.inference.DiffusionEnhancement
        The enhancer (anything with ``enhance_batch`` and ``sample_rate``).
    asr : speechbrain.inference.interfaces.Pretrained
        An ASR interface with ``transcribe_batch(wavs, wav_lens)``.
    **enhance_options
        Default options of ``enhance_batch`` (``steps``, ``sampler``,
        ``seed``, ``use_refiner``...), overridable per call.

    Example
    -------
    >>> class Half:
    ...     sample_rate = 16000
    ...     def enhance_batch(self, wavs, lengths=None, **options):
    ...         return 0.5 * wavs
    >>> class EchoASR:
    ...     hparams = type("H", (), {"sample_rate": 16000})
    ...     def transcribe_batch(self, wavs, wav_lens):
    ...         return [str(float(w.abs().max())) for w in wavs], None
    >>> chain = EnhanceThenTranscribe(Half(), EchoASR())
    >>> chain.transcribe_batch(torch.ones(1, 800))[0]
    ['0.5']
    """

    def __init__(self, enhancer, asr, **enhance_options):
        if not hasattr(asr, "transcribe_batch"):
            raise TypeError(
                f"{type(asr).__name__} has no transcribe_batch method; pass "
                "a SpeechBrain ASR interface (e.g. EncoderASR)."
            )
        self.enhancer = enhancer
        self.asr = asr
        self.enhance_options = enhance_options

    @property
    def sample_rate(self):
        """Sample rate of the input: the enhancer's."""
        return int(self.enhancer.sample_rate)

    def enhance_batch(self, wavs, wav_lens=None, sample_rate=None, **options):
        """Enhance and bring to the ASR sample rate.

        Arguments
        ---------
        wavs : torch.Tensor
            (B, L) noisy waveforms.
        wav_lens : torch.Tensor, optional
            (B,) relative lengths; default all ones.
        sample_rate : int, optional
            Rate of ``wavs``; default the enhancer's. Another rate is
            resampled to the enhancer's first.
        **options
            Override the default ``enhance_batch`` options.

        Returns
        -------
        wavs : torch.Tensor
            (B, L') enhanced waveforms at the ASR sample rate.
        wav_lens : torch.Tensor
            (B,) relative lengths for them.
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0], device=wavs.device)
        wav_lens = torch.as_tensor(wav_lens, dtype=torch.float32)
        if sample_rate is not None:
            wavs, wav_lens = resample_batch(
                wavs, wav_lens, sample_rate, self.sample_rate
            )
        settings = {**self.enhance_options, **options}
        enhanced = self.enhancer.enhance_batch(wavs, wav_lens, **settings)
        return resample_batch(
            enhanced, wav_lens, self.sample_rate, asr_sample_rate(self.asr)
        )

    def transcribe_batch(
        self, wavs, wav_lens=None, sample_rate=None, **options
    ):
        """Enhance, then ``asr.transcribe_batch``; returns what it returns.

        Arguments are those of :meth:`enhance_batch`. SpeechBrain's ASR
        interfaces return ``(words, tokens)``.
        """
        enhanced, lengths = self.enhance_batch(
            wavs, wav_lens, sample_rate, **options
        )
        return self.asr.transcribe_batch(enhanced, lengths)

    def transcribe_file(self, path, mix_down=False, **options):
        """Enhance a file (chunked if long), then transcribe it.

        Arguments
        ---------
        path : str or pathlib.Path
            Audio file, at any sample rate.
        mix_down : bool
            Average several channels to mono.
        **options
            ``enhance_file`` options (``steps``, ``seed``...).

        Returns
        -------
        str
            The transcription.
        """
        settings = {**self.enhance_options, **options}
        enhanced = self.enhancer.enhance_file(
            pathlib.Path(path), mix_down=mix_down, **settings
        )
        wavs, lengths = resample_batch(
            enhanced[None],
            torch.ones(1),
            self.sample_rate,
            asr_sample_rate(self.asr),
        )
        words = self.asr.transcribe_batch(wavs, lengths)[0]
        return str(words[0])

    def __call__(self, wavs, wav_lens=None, **options):
        """Same as :meth:`transcribe_batch`."""
        return self.transcribe_batch(wavs, wav_lens, **options)
