"""Enhancement before speech recognition, with a tiny SpeechBrain ASR model.

The ASR folder is built in the test: a random linear CTC encoder over
filterbanks, a sentencepiece tokenizer trained on a few sentences, and a
hyperparams.yaml loaded by SpeechBrain's own ``EncoderASR.from_hparams``
from a local folder (no hub). The pure helpers of bench/asr_chain.py (text
normalisation, bootstrap interval, choice of the defaults) are tested here
too; the benchmark itself needs pocketsphinx and the MiniVB sources.
"""

import pytest
import sentencepiece as spm
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.inference.ASR import EncoderASR

from speechbrain_elbo.asr import (
    ASR_DEFAULTS,
    EnhanceThenTranscribe,
    mix_noisy,
    resample_batch,
)
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
    chain = EnhanceThenTranscribe(enhancer, asr, mix_noisy=0, steps=1, seed=0)
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
    chain = EnhanceThenTranscribe(enhancer, asr, mix_noisy=0, steps=1, seed=0)
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


def test_mix_noisy_hand_computed():
    enhanced = torch.tensor([[1.0, 2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    noisy = torch.tensor([[2.0, 4.0, 1.0, 7.0], [-3.0, 1.0, 0.0, 0.0]])
    out = mix_noisy(enhanced, noisy, 0.25, torch.tensor([0.75, 1.0]))
    # row 0: gain <n,e>/<e,e> = 10/5 = 2 over the 3 valid samples:
    # 0.75 * 2 * [1, 2, 0] + 0.25 * [2, 4, 1], then the padding is zero
    # row 1: <n,e> = -3 < 0, so the gain is 0: a quarter of the noisy input
    expected = torch.tensor([[2.0, 4.0, 0.25, 0.0], [-0.75, 0.25, 0.0, 0.0]])
    assert torch.allclose(out, expected)
    # the scale alignment: a halved estimate is brought back to the input
    clean = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mix_noisy(0.5 * clean, clean, 0.0), clean)
    # a silent estimate leaves the share of the input
    assert torch.equal(
        mix_noisy(torch.zeros(3), torch.ones(3), 0.4), torch.full((3,), 0.4)
    )
    assert torch.equal(mix_noisy(clean, 3 * clean, 1.0), 3 * clean)
    with pytest.raises(ValueError, match="noisy share must lie in"):
        mix_noisy(clean, clean, 1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        mix_noisy(clean, clean[:10], 0.5)


class Rolled:
    """A stand-in enhancer: the input shifted by a sample, halved."""

    sample_rate = 16000

    def enhance_batch(self, wavs, lengths=None, **options):
        return 0.5 * torch.roll(wavs, 1, -1)

    def enhance_file(self, path, mix_down=False, **options):
        from speechbrain_elbo.asr import noisy_at_rate

        return self.enhance_batch(noisy_at_rate(path, 16000, mix_down))


def test_mix_option_reaches_the_chain(tmp_path):
    import soundfile as sf

    from speechbrain_elbo.asr import noisy_at_rate

    folder = make_asr_folder(tmp_path / "asr", 8000)
    asr = EncoderASR.from_hparams(source=str(folder))
    calls = spy_on(asr)
    g = torch.Generator().manual_seed(2)
    wavs = 0.1 * torch.randn(2, 8000, generator=g)
    wavs[1, 4800:] = 0
    lengths = torch.tensor([1.0, 0.6])
    enhancer = Rolled()
    chain = EnhanceThenTranscribe(enhancer, asr, mix_noisy=0.5, steps=1)
    assert chain.mix_noisy == 0.5
    chain.transcribe_batch(wavs, lengths)
    enhanced = enhancer.enhance_batch(wavs)
    mixed = mix_noisy(enhanced, wavs, 0.5, lengths)
    expected, _ = resample_batch(mixed, lengths, 16000, 8000)
    assert torch.allclose(calls[-1][0], expected, atol=1e-6)
    plain, _ = resample_batch(enhanced, lengths, 16000, 8000)
    assert not torch.allclose(calls[-1][0], plain, atol=1e-3)
    # a per-call share overrides the chain's; 0 is the enhancer's output
    chain.transcribe_batch(wavs, lengths, mix_noisy=0)
    assert torch.allclose(calls[-1][0], plain, atol=1e-6)
    # files: the input is mixed in at the enhancer's rate
    path = tmp_path / "noisy.wav"
    sf.write(path, wavs[0].numpy(), 16000, subtype="FLOAT")
    chain.transcribe_file(path)
    mixed = mix_noisy(enhancer.enhance_file(path), wavs[0], 0.5)
    expected, _ = resample_batch(mixed[None], torch.ones(1), 16000, 8000)
    assert torch.allclose(calls[-1][0], expected, atol=1e-6)
    assert torch.equal(noisy_at_rate(path, 16000), wavs[0])
    with pytest.raises(ValueError, match="noisy share"):
        EnhanceThenTranscribe(enhancer, asr, mix_noisy=-0.1)


def test_chain_defaults_are_the_benchmarked_ones(enhancer, tmp_path):
    folder = make_asr_folder(tmp_path / "asr", 16000)
    asr = EncoderASR.from_hparams(source=str(folder))
    chain = EnhanceThenTranscribe(enhancer, asr)
    assert chain.mix_noisy == ASR_DEFAULTS["mix_noisy"]
    for key in ("use_refiner", "steps"):
        assert chain.enhance_options.get(key) == ASR_DEFAULTS[key]
    # options given to the chain win over the defaults
    chain = EnhanceThenTranscribe(enhancer, asr, steps=1, use_refiner=False)
    assert chain.enhance_options == {"steps": 1, "use_refiner": False}


@pytest.fixture(scope="module")
def bench(script):
    return script("bench/asr_chain.py")


def test_text_normalisation(bench):
    norm = bench.normalise_text
    assert norm("Please press 1 or #, then *.") == [
        "please",
        "press",
        "one",
        "or",
        "pound",
        "then",
        "star",
    ]
    assert norm("Call-Forward on No Answer.") == [
        "call",
        "forward",
        "on",
        "no",
        "answer",
    ]
    assert norm("you'd like [beep] <tone> (sound plays) 'quoted'") == [
        "you'd",
        "like",
        "quoted",
    ]
    assert norm("extension 1234") is None
    assert norm("a 28.8 kilobit modem") is None
    assert norm("H.323") is None
    assert norm("[ascending tones]") == []
    # the recogniser's output goes through the same function
    assert norm("PLEASE  enter") == ["please", "enter"]


def test_bootstrap_interval_hand_checkable(bench):
    # two one-word utterances, one wrong: a resample has 0, 1 or 2 errors
    # with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 100]
    wer, low, high = bench.bootstrap_wer([0, 1], [1, 1], resamples=4000)
    assert (wer, low, high) == (50.0, 0.0, 100.0)
    # identical utterances: no spread
    assert bench.bootstrap_wer([1, 1, 1], [4, 4, 4]) == (25.0, 25.0, 25.0)
    # pooled, not averaged: 3 errors in 10 words and 0 in 2 is 25 %
    assert bench.bootstrap_wer([3, 0], [10, 2])[0] == 25.0
    # paired difference: the same resamples for both conditions
    delta = bench.bootstrap_wer([2, 2], [4, 4], base=[1, 1])
    assert delta == (25.0, 25.0, 25.0)
    with pytest.raises(ValueError, match="one weight and one base value"):
        bench.bootstrap_wer([1], [1, 2])


def test_choice_of_the_defaults(bench):
    noisy = {0: (80.0, 0.0), 10: (50.0, 0.0), 20: (30.0, 0.0)}
    cells = {
        "noisy": noisy,
        # best mean, but significantly worse at 20 dB: excluded
        "s1 k4 m0": {0: (50.0, -40.0), 10: (45.0, -9.0), 20: (36.0, 1.0)},
        "s12 k4 m0.3": {0: (70.0, -20.0), 10: (50.0, -5.0), 20: (31.0, -2.0)},
        # the same WERs without the refiner win the tie
        "s1 k4 m0.3": {0: (70.0, -20.0), 10: (50.0, -5.0), 20: (31.0, -2.0)},
    }
    assert bench.choose_setting(cells, [0, 10, 20]) == "s1 k4 m0.3"
    # nothing better than the input on average: the input itself
    cells = {
        "noisy": noisy,
        "s1 k4 m0": {0: (90.0, -1), 10: (50.0, -5), 20: (30.0, -3)},
    }
    assert bench.choose_setting(cells, [0, 10, 20]) == "noisy"
    setting = bench.Setting.parse("s12 k8 m0.6")
    assert setting == bench.Setting(True, 8, 0.6)
    assert setting.name == "s12 k8 m0.6"
    assert bench.Setting.parse("noisy") is None


def test_cli_mix_noisy(tmp_path, capsys):
    import soundfile as sf

    from speechbrain_elbo.asr import noisy_at_rate
    from speechbrain_elbo.cli import main

    g = torch.Generator().manual_seed(3)
    path = tmp_path / "in" / "noisy.wav"
    path.parent.mkdir()
    sf.write(path, (0.1 * torch.randn(4000, generator=g)).numpy(), 8000)
    common = ["--model", "minivb-small", "--steps", "2", "--sampler", "euler"]
    common += ["--quiet", str(path)]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    assert (
        main(common + ["--out", str(tmp_path / "mix"), "--mix-noisy", "0.5"])
        == 0
    )
    assert (
        main(common + ["--out", str(tmp_path / "all"), "--mix-noisy", "1"]) == 0
    )
    plain = torch.from_numpy(sf.read(tmp_path / "plain" / "noisy.wav")[0])
    mixed = torch.from_numpy(sf.read(tmp_path / "mix" / "noisy.wav")[0])
    noisy = noisy_at_rate(path, 16000).double()
    expected = mix_noisy(plain, noisy, 0.5)
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert not torch.allclose(mixed, plain, atol=1e-3)
    # share 1: the input itself, at the model's rate
    whole = torch.from_numpy(sf.read(tmp_path / "all" / "noisy.wav")[0])
    assert torch.allclose(whole, noisy, atol=1e-6)
    # --resume keeps the outputs as they are: nothing is mixed twice
    assert (
        main(
            common
            + ["--out", str(tmp_path / "mix"), "--mix-noisy", "0.5", "--resume"]
        )
        == 0
    )
    again = torch.from_numpy(sf.read(tmp_path / "mix" / "noisy.wav")[0])
    assert torch.equal(again, mixed)
    capsys.readouterr()
    assert (
        main(common + ["--out", str(tmp_path / "x"), "--mix-noisy", "1.5"]) == 1
    )
    assert "--mix-noisy must lie in [0, 1]" in capsys.readouterr().err
