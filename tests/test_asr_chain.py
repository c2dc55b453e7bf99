"""Enhancement before speech recognition, with a tiny SpeechBrain ASR model.

The ASR folder is built in the test: a random linear CTC encoder over
filterbanks, a sentencepiece tokenizer trained on a few sentences, and a
hyperparams.yaml loaded by SpeechBrain's own ``EncoderASR.from_hparams``
from a local folder (no hub).
"""

import pytest
import sentencepiece as spm
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.ASR import EncoderASR

from speechbrain_elbo.asr import EnhanceThenTranscribe, resample_batch
from speechbrain_elbo.inference import DiffusionEnhancement

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "speech enhancement removes noise before recognition",
    "a diffusion model turns noise into clean speech",
    "seven silver swans swam silently seaward",
    "we measure word error rates on noisy and enhanced audio",
]

ASR_YAML = """
sample_rate: {rate}
n_mels: 20
compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_mels: !ref <n_mels>
linear: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <n_mels>
    n_neurons: {vocab}
log_softmax: !new:speechbrain.nnet.activations.Softmax
    apply_log: True
encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    - !ref <compute_features>
    - !ref <linear>
    - !ref <log_softmax>
tokenizer: !new:sentencepiece.SentencePieceProcessor
decoding_function: !name:speechbrain.decoders.ctc.ctc_greedy_decode
    blank_id: 0
audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>
modules:
    encoder: !ref <encoder>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
        tokenizer: !ref <tokenizer>
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def make_asr_folder(folder, rate):
    """A random-weight CTC recogniser folder that from_hparams can load."""
    folder.mkdir(parents=True)
    text = folder / "text.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "tok"),
        vocab_size=24,
        model_type="char",
        character_coverage=1.0,
        unk_id=0,  # the CTC blank
        bos_id=-1,
        eos_id=-1,
        minloglevel=2,
    )
    (folder / "tok.model").rename(folder / "tokenizer.ckpt")
    tokenizer = spm.SentencePieceProcessor(
        model_file=str(folder / "tokenizer.ckpt")
    )
    yaml = ASR_YAML.format(rate=rate, vocab=tokenizer.vocab_size())
    (folder / "hyperparams.yaml").write_text(yaml)
    encoder = load_hyperpyyaml(yaml)["encoder"]
    torch.manual_seed(0)
    encoder(torch.randn(1, 1600))  # build lazy shapes, if any
    torch.save(encoder.state_dict(), folder / "encoder.ckpt")
    return folder


@pytest.fixture(scope="module")
def enhancer(tiny_models):
    return DiffusionEnhancement.from_hparams(
        source=tiny_models[0], run_opts={"device": "cpu"}
    )


def spy_on(asr):
    calls = []
    original = asr.transcribe_batch

    def spy(wavs, wav_lens):
        calls.append((wavs.clone(), wav_lens.clone()))
        return original(wavs, wav_lens)

    asr.transcribe_batch = spy
    return calls


@pytest.mark.parametrize("asr_rate", [16000, 8000])
def test_enhance_then_transcribe(enhancer, tmp_path, asr_rate):
    folder = make_asr_folder(tmp_path / "asr", asr_rate)
    asr = EncoderASR.from_hparams(
        source=str(folder), savedir=str(tmp_path / "save")
    )
    calls = spy_on(asr)
    chain = EnhanceThenTranscribe(enhancer, asr, steps=1, seed=0)
    g = torch.Generator().manual_seed(1)
    wavs = torch.zeros(2, 8000)
    wavs[0] = 0.1 * torch.randn(8000, generator=g)
    wavs[1, :4800] = 0.1 * torch.randn(4800, generator=g)
    lengths = torch.tensor([1.0, 0.6])
    words, tokens = chain.transcribe_batch(wavs, lengths)

    assert len(words) == 2 and all(isinstance(w, str) for w in words)
    assert len(tokens) == 2
    ((seen_wavs, seen_lens),) = calls
    ratio = asr_rate / 16000
    assert seen_wavs.shape == (2, int(8000 * ratio))
    assert torch.allclose(seen_lens, torch.tensor([1.0, 0.6]))
    # padding stays silent after enhancement and resampling
    valid = int(4800 * ratio)
    assert seen_wavs[1, valid:].abs().max() == 0
    assert seen_wavs[1, :valid].abs().max() > 0
    # what the recogniser received is the enhancer's output
    enhanced = enhancer.enhance_batch(wavs, lengths, steps=1, seed=0)
    expected, _ = resample_batch(enhanced, lengths, 16000, asr_rate)
    assert torch.allclose(seen_wavs, expected, atol=1e-6)
    # per-call options override the chain's defaults
    chain.transcribe_batch(wavs, lengths, seed=1)
    assert not torch.allclose(calls[-1][0], seen_wavs)


def test_transcribe_file_and_input_rate(enhancer, tmp_path):
    import soundfile as sf

    folder = make_asr_folder(tmp_path / "asr", 16000)
    asr = EncoderASR.from_hparams(source=str(folder))
    calls = spy_on(asr)
    chain = EnhanceThenTranscribe(enhancer, asr, steps=1, seed=0)
    path = tmp_path / "noisy.wav"
    sf.write(path, (0.1 * torch.randn(12000)).numpy(), 24000)
    text = chain.transcribe_file(path)
    assert isinstance(text, str)
    assert calls[-1][0].shape == (1, 8000)  # 0.5 s at 16 kHz
    # a batch at another rate is brought to the enhancer's rate first
    words, _ = chain.transcribe_batch(
        0.1 * torch.randn(1, 4000), sample_rate=8000
    )
    assert calls[-1][0].shape == (1, 8000) and isinstance(words[0], str)


def test_resample_batch_lengths():
    wavs = torch.ones(2, 16000)
    wavs[1, 8001:] = 0
    out, lens = resample_batch(
        wavs, torch.tensor([1.0, 8001 / 16000]), 16000, 8000
    )
    assert out.shape == (2, 8000)
    # ceil(8001 / 2) valid samples of 8000
    assert torch.equal(lens, torch.tensor([1.0, 4001 / 8000]))
    assert out[1, 4001:].abs().max() == 0
    same, same_lens = resample_batch(
        wavs, torch.tensor([1.0, 0.5]), 16000, 16000
    )
    assert same is wavs and same_lens.tolist() == [1.0, 0.5]


def test_rejects_non_asr(enhancer):
    with pytest.raises(TypeError, match="transcribe_batch"):
        EnhanceThenTranscribe(enhancer, object())
