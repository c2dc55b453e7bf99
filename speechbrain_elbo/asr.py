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
    "ASR_DEFAULTS",
    "EnhanceThenTranscribe",
    "asr_sample_rate",
    "mix_noisy",
    "mix_noisy_file",
    "noisy_at_rate",
    "resample_batch",
]

#: Defaults of :class:`EnhanceThenTranscribe`, chosen by bench/asr_chain.py
#: on its tuning split (docs/inference.md, "Word error rate"): a 0.3 share
#: of the noisy input mixed back, the model's refiner and sampler steps
#: (None: the model folder's own setting).
ASR_DEFAULTS = {"mix_noisy": 0.3, "use_refiner": None, "steps": None}


def mix_noisy(enhanced, noisy, share, lengths=None):
    """Mix a share of the noisy input back into the enhanced signal.

    ``(1 - share) g enhanced + share noisy``, where ``g`` is the
    least-squares gain that brings the enhanced signal to the scale of the
    noisy one, ``max(0, <noisy, enhanced>) / <enhanced, enhanced>`` over
    each waveform's valid samples (0 for a silent output). Recognisers
    trained on real speech read the artefacts of an enhancer as words; a
    share of the observation masks them (``share=0``: the scaled enhanced
    signal; ``share=1``: the noisy input). Samples past each length are
    zero in the output.

    Arguments
    ---------
    enhanced : torch.Tensor
        (B, L) or (L,) enhanced waveforms.
    noisy : torch.Tensor
        The noisy inputs, same shape and sample rate.
    share : float
        Share of the noisy input, in [0, 1].
    lengths : torch.Tensor, optional
        (B,) relative lengths; default all ones.

    Returns
    -------
    torch.Tensor
        The mixture, shaped like ``enhanced``.

    Example
    -------
    >>> mix_noisy(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0]), 0.5)
    tensor([2., 1.])
    """
    share = _check_share(share)
    enhanced = torch.as_tensor(enhanced)
    noisy = torch.as_tensor(noisy, dtype=enhanced.dtype).to(enhanced.device)
    if enhanced.shape != noisy.shape:
        raise ValueError(
            f"The enhanced and noisy waveforms differ in shape: "
            f"{tuple(enhanced.shape)} vs {tuple(noisy.shape)}; bring them to "
            "the same sample rate and length first."
        )
    squeeze = enhanced.dim() == 1
    if squeeze:
        enhanced, noisy = enhanced[None], noisy[None]
    if lengths is None:
        lengths = torch.ones(enhanced.shape[0])
    valid = torch.round(
        torch.as_tensor(lengths, dtype=torch.float64).cpu() * enhanced.shape[-1]
    )
    positions = torch.arange(enhanced.shape[-1])
    mask = (positions[None] < valid[:, None]).to(enhanced)
    enhanced, noisy = enhanced * mask, noisy * mask
    energy = (enhanced * enhanced).sum(-1, keepdim=True)
    cross = (noisy * enhanced).sum(-1, keepdim=True).clamp(min=0)
    gain = torch.where(energy > 0, cross / energy.clamp(min=1e-30), 0.0)
    mixed = (1.0 - share) * gain * enhanced + share * noisy
    return mixed[0] if squeeze else mixed


def _check_share(share):
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(
            f"The noisy share must lie in [0, 1], got {share}; 0 keeps the "
            "enhanced signal, 1 the noisy input."
        )
    return share


def noisy_at_rate(path, sample_rate, mix_down=False):
    """An input file as a mono float32 waveform (L,) at ``sample_rate``.

    Read as the enhancer reads it
    (:func:`speechbrain_elbo.audio_input.load_waveform`) and resampled as
    :func:`resample_batch` does, so that it lines up with the enhanced file.

    Example
    -------
    >>> import numpy as np
    >>> import soundfile as sf
    >>> path = getfixture("tmp_path") / "a.wav"
    >>> sf.write(path, np.zeros(800, dtype="float32"), 8000)
    >>> noisy_at_rate(path, 16000).shape
    torch.Size([1600])
    """
    from speechbrain_elbo.audio_input import load_waveform
    from speechbrain_elbo.fileio import audio_info

    rate = audio_info(path).sample_rate
    noisy = load_waveform(path, mix_down)
    return resample_batch(noisy[None], torch.ones(1), rate, sample_rate)[0][0]


def mix_noisy_file(enhanced_path, noisy_path, share, mix_down=False):
    """Mix a share of a noisy file into its enhanced file, in place.

    :func:`mix_noisy` of the enhanced file and the noisy input (read as the
    enhancer reads it, at the enhanced file's rate); the result replaces
    the enhanced file atomically, with its sample rate and subtype.

    Arguments
    ---------
    enhanced_path : str or pathlib.Path
        The enhanced file, rewritten.
    noisy_path : str or pathlib.Path
        Its noisy input.
    share : float
        Share of the noisy input, in [0, 1].
    mix_down : bool
        Average a multi-channel input, as the enhancement did.

    Example
    -------
    >>> import numpy as np
    >>> import soundfile as sf
    >>> tmp = getfixture("tmp_path")
    >>> sf.write(tmp / "noisy.wav", np.full(4, 0.5, "float32"), 16000)
    >>> sf.write(tmp / "out.wav", np.array([0.5, 0, 0, 0], "float32"), 16000,
    ...          subtype="FLOAT")
    >>> mix_noisy_file(tmp / "out.wav", tmp / "noisy.wav", 0.5)
    >>> sf.read(tmp / "out.wav")[0].tolist()
    [0.5, 0.25, 0.25, 0.25]
    """
    import soundfile as sf

    from speechbrain_elbo.fileio import write_audio_atomic

    share = _check_share(share)
    info = sf.info(str(enhanced_path))
    enhanced, rate = sf.read(str(enhanced_path), dtype="float32")
    noisy = noisy_at_rate(noisy_path, rate, mix_down)[: len(enhanced)]
    if noisy.shape[-1] < len(enhanced):
        noisy = torch.nn.functional.pad(noisy, (0, len(enhanced) - len(noisy)))
    mixed = mix_noisy(torch.from_numpy(enhanced), noisy, share)
    write_audio_atomic(enhanced_path, mixed, rate, info.subtype)


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
    mix_noisy : float, optional
        Share of the noisy input mixed back into the enhanced signal before
        recognition (:func:`mix_noisy`); default
        ``ASR_DEFAULTS["mix_noisy"]``. Overridable per call
        (``mix_noisy=``).
    **enhance_options
        Default options of ``enhance_batch`` (``steps``, ``sampler``,
        ``seed``, ``use_refiner``...), overridable per call; those not
        given default to :data:`ASR_DEFAULTS` where it sets them.

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
    >>> chain = EnhanceThenTranscribe(Half(), EchoASR(), mix_noisy=0)
    >>> chain.transcribe_batch(torch.ones(1, 800))[0]
    ['0.5']
    >>> # 0.3 of the input, the rest the output brought to the input's scale
    >>> chain.transcribe_batch(torch.ones(1, 800), mix_noisy=0.3)[0]
    ['1.0']
    """

    def __init__(self, enhancer, asr, mix_noisy=None, **enhance_options):
        if not hasattr(asr, "transcribe_batch"):
            raise TypeError(
                f"{type(asr).__name__} has no transcribe_batch method; pass "
                "a SpeechBrain ASR interface (e.g. EncoderASR)."
            )
        self.enhancer = enhancer
        self.asr = asr
        if mix_noisy is None:
            mix_noisy = ASR_DEFAULTS["mix_noisy"]
        self.mix_noisy = _check_share(mix_noisy)
        defaults = {
            key: value
            for key, value in ASR_DEFAULTS.items()
            if key != "mix_noisy" and value is not None
        }
        self.enhance_options = {**defaults, **enhance_options}

    def _settings(self, options):
        """(noisy share, enhance_batch options) of one call."""
        options = dict(options)
        share = options.pop("mix_noisy", None)
        share = self.mix_noisy if share is None else _check_share(share)
        return share, {**self.enhance_options, **options}

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
        share, settings = self._settings(options)
        enhanced = self.enhancer.enhance_batch(wavs, wav_lens, **settings)
        if share > 0:
            enhanced = mix_noisy(enhanced, wavs, share, wav_lens)
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
        share, settings = self._settings(options)
        enhanced = self.enhancer.enhance_file(
            pathlib.Path(path), mix_down=mix_down, **settings
        )
        if share > 0:
            noisy = noisy_at_rate(path, self.sample_rate, mix_down)
            enhanced = mix_noisy(enhanced, noisy[: enhanced.shape[-1]], share)
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
