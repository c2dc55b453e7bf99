"""The Pretrained enhancement interface: batches, checks, chunks, files."""

import logging
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_elbo.audio_input import EnhancementInputError
from speechbrain_elbo.chunking import (
    TensorReader,
    chunk_layout,
    chunk_windows,
    crossfade_windows,
    overlap_add,
    process_in_chunks,
)
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.oracle import GaussianOracle
from speechbrain_elbo.sde import expand_time

SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stage1(tiny_models):
    return DiffusionEnhancement.from_hparams(
        source=tiny_models[0], run_opts={"device": "cpu"}
    )


@pytest.fixture(scope="module")
def stage2(tiny_models):
    return DiffusionEnhancement.from_hparams(
        source=tiny_models[1], run_opts={"device": "cpu"}
    )


def speechlike(num_samples, seed=0):
    """Smooth, amplitude-modulated harmonics plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / SR
    envelope = 0.6 + 0.4 * torch.sin(2 * math.pi * 1.3 * t)
    tone = sum(
        torch.sin(2 * math.pi * f * t + p) / k
        for k, (f, p) in enumerate([(180, 0.0), (360, 1.0), (540, 2.0)], 1)
    )
    return 0.3 * envelope * tone + 0.01 * torch.randn(num_samples, generator=g)


# ---------------------------------------------------------------------------
# enhance_batch
# ---------------------------------------------------------------------------
def test_batch_shape_seed_and_nfe(stage1):
    noisy = torch.stack([speechlike(4000, 0), speechlike(4000, 1)])
    a, nfe = stage1.enhance_batch(noisy, seed=3, return_nfe=True)
    assert a.shape == noisy.shape and a.dtype == torch.float32
    assert nfe == 4 and stage1.last_nfe == 4  # pc, 2 steps, 1 corrector
    assert torch.isfinite(a).all()
    assert torch.equal(a, stage1.enhance_batch(noisy, seed=3))
    assert not torch.allclose(a, stage1.enhance_batch(noisy, seed=4))
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(a, stage1.enhance_batch(noisy, generator=generator))
    single = stage1.enhance_batch(noisy[0], seed=3)
    assert single.shape == (4000,)


@pytest.mark.parametrize(
    "options, nfe",
    [
        ({"sampler": "pc", "steps": 3, "corrector_steps": 0}, 3),
        ({"sampler": "pc", "steps": 2, "corrector_steps": 2}, 6),
        ({"sampler": "euler", "steps": 3}, 3),
        ({"sampler": "heun", "steps": 3}, 5),
        ({"sampler": "ode", "steps": 2}, 3),
    ],
)
def test_per_call_sampler_settings(stage1, options, nfe):
    noisy = speechlike(2000)[None]
    out = stage1.enhance_batch(noisy, seed=0, **options)
    assert stage1.last_nfe == nfe
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_ode_sampler_is_deterministic_given_seed(stage1, sampler):
    noisy = speechlike(2000)[None]
    a = stage1.enhance_batch(noisy, sampler=sampler, steps=2, seed=5)
    b = stage1.enhance_batch(noisy, sampler=sampler, steps=2, seed=5)
    assert torch.equal(a, b)


def test_refiner_on_off(stage1, stage2):
    noisy = speechlike(3000)[None]
    with_refiner = stage2.enhance_batch(noisy, seed=1)
    assert stage2.last_refined is True
    without = stage2.enhance_batch(noisy, seed=1, use_refiner=False)
    assert stage2.last_refined is False
    # stage 1 of the two-stage folder is the stage-1 model itself
    assert torch.equal(without, stage1.enhance_batch(noisy, seed=1))
    assert (with_refiner - without).abs().max() > 1e-4
    with pytest.raises(ValueError, match="no refiner"):
        stage1.enhance_batch(noisy, use_refiner=True)


def test_lengths_zero_the_padding(stage1):
    noisy = torch.stack([speechlike(4000, 0), speechlike(4000, 1)])
    lengths = torch.tensor([1.0, 0.5])
    out = stage1.enhance_batch(noisy, lengths, seed=0)
    assert out[1, 2000:].abs().max() == 0
    assert out[1, :2000].abs().max() > 0
    # whatever sits in the padding is ignored
    noisy[1, 2000:] = float("nan")
    again = stage1.enhance_batch(noisy, lengths, seed=0)
    assert torch.equal(out, again)


@pytest.mark.parametrize(
    "noisy, match",
    [
        (torch.zeros(1, 0), "empty"),
        (torch.randn(1, 300), "fewer than 510 samples"),
        (torch.zeros(2, 4000), r"index \[0, 1\]: all zeros"),
        (torch.ones(1, 4000).index_fill(1, torch.tensor([9]), math.nan), "NaN"),
        (torch.ones(1, 4000).index_fill(1, torch.tensor([9]), math.inf), "Inf"),
        (torch.randn(1, 2, 4000), "mix_down"),
        (torch.ones(1, 4000, dtype=torch.int16), "integer PCM"),
        (np.ones((1, 4000)), "torch.Tensor"),
    ],
)
def test_bad_input_errors(stage1, noisy, match):
    with pytest.raises(EnhancementInputError, match=match):
        stage1.enhance_batch(noisy, steps=1)


def test_bad_settings_errors(stage1):
    noisy = speechlike(2000)[None]
    with pytest.raises(ValueError, match="Unknown sampler"):
        stage1.enhance_batch(noisy, sampler="ddim")
    with pytest.raises(ValueError, match="'pc' sampler only"):
        stage1.enhance_batch(noisy, sampler="euler", corrector_steps=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        stage1.enhance_batch(noisy, steps=0)
    with pytest.raises(ValueError, match="either seed or generator"):
        stage1.enhance_batch(noisy, seed=1, generator=torch.Generator())
    with pytest.raises(EnhancementInputError, match=r"\(0, 1\]"):
        stage1.enhance_batch(noisy, torch.tensor([1.5]))
    with pytest.raises(ValueError, match="at most half"):
        stage1.enhance_long(
            speechlike(2000), overlap_seconds=1.0, chunk_seconds=1
        )
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        stage1.enhance_long(speechlike(2000), max_batch=0)


# ---------------------------------------------------------------------------
# enhance_stages: both stages of one stage-1 sample
# ---------------------------------------------------------------------------
def test_stages_match_enhance_batch(stage2):
    noisy = torch.randn(3000, generator=torch.Generator().manual_seed(1))
    out = stage2.enhance_stages(noisy, steps=2, seed=5)
    stage1 = stage2.enhance_batch(noisy, steps=2, seed=5, use_refiner=False)
    both = stage2.enhance_batch(noisy, steps=2, seed=5, use_refiner=True)
    assert torch.equal(out["stage1"], stage1)
    assert torch.equal(out["stage1+2"], both)
    assert not torch.equal(stage1, both)
    assert out["nfe"] == 4 == stage2.last_nfe  # pc, 2 steps, 1 corrector
    assert 0 < out["seconds"]["stage1"] <= out["seconds"]["stage1+2"]


def test_stages_of_a_stage1_model_and_errors(stage1):
    noisy = speechlike(3000)
    out = stage1.enhance_stages(noisy, sampler="euler", steps=3, seed=2)
    assert set(out) == {"stage1", "nfe", "seconds"}
    assert set(out["seconds"]) == {"stage1"} and out["nfe"] == 3
    expected = stage1.enhance_batch(noisy, sampler="euler", steps=3, seed=2)
    assert torch.equal(out["stage1"], expected)
    assert out["stage1"].device.type == "cpu"
    with pytest.raises(EnhancementInputError, match="one waveform"):
        stage1.enhance_stages(noisy[None], steps=1)
    with pytest.raises(EnhancementInputError, match="all zeros"):
        stage1.enhance_stages(torch.zeros(3000), steps=1)


def test_loud_and_clipped_inputs(stage1):
    clean = speechlike(4000)[None]
    quiet = stage1.enhance_batch(clean, seed=2, steps=1)
    # peak normalisation makes enhancement scale-equivariant: no overflow
    loud = stage1.enhance_batch(1e4 * clean, seed=2, steps=1)
    assert torch.isfinite(loud).all()
    error = (loud - 1e4 * quiet).abs().max()
    assert error <= 1e-5 * (1e4 * quiet).abs().max()
    clipped = (20 * clean).clamp(-1, 1)
    out = stage1.enhance_batch(clipped, seed=2, steps=1)
    assert torch.isfinite(out).all() and out.abs().max() < 100


# ---------------------------------------------------------------------------
# cross-fades and chunking
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["raised_cosine", "linear"])
def test_crossfade_of_identical_chunks_is_exact(kind):
    signal = torch.randn(4 * 300 + 100)
    count, size, hop = chunk_layout(signal.numel(), 400, 100)
    assert (count, size, hop) == (4, 400, 300)
    chunks = signal.unfold(0, size, hop)
    joined = overlap_add(
        chunks * chunk_windows(4, size, 100, True, True, kind), hop
    )
    assert torch.allclose(joined, signal, atol=1e-6)


def test_equal_power_crossfade_bumps_correlated_chunks():
    signal = torch.ones(700)
    chunks = signal.unfold(0, 400, 300)
    windows = chunk_windows(2, 400, 100, True, True, "equal_power")
    joined = overlap_add(chunks * windows, 300)
    assert joined.max() > 1.4  # +3 dB mid-fade: not seamless
    fade_in, fade_out = crossfade_windows(100, "equal_power")
    assert torch.allclose(fade_in**2 + fade_out**2, torch.ones(100))


@pytest.mark.parametrize("kind", ["raised_cosine", "linear"])
@pytest.mark.parametrize("max_batch", [1, 2, 5])
def test_chunk_loop_rebuilds_the_signal(kind, max_batch):
    # every length from one chunk to three, so every short-tail case
    chunk, overlap = 40, 12
    widths = []

    def identity(chunks, lengths, first):
        widths.append(chunks.shape[1])
        return chunks

    for total in range(chunk, 3 * chunk + 1):
        signal = torch.randn(total)
        pieces = []
        process_in_chunks(
            TensorReader(signal),
            identity,
            pieces.append,
            chunk,
            overlap,
            max_batch,
            kind,
            min_samples=overlap + 1,
        )
        joined = torch.cat(pieces)
        assert joined.shape == signal.shape
        assert torch.allclose(joined, signal, atol=1e-6), total
    assert overlap < min(widths) < 2 * overlap  # short final chunks met


def test_chunk_layout_covers_signal():
    for total in (1000, 1301, 5000, 16001):
        count, size, hop = chunk_layout(total, 1024, 256)
        assert (count - 1) * hop + size >= total
        assert (count - 2) * hop + size < total or count == 1


class LocalGainOracle(GaussianOracle):
    """Exact score for x0 | y ~ CN(g(y), s0^2), g a per-bin nonlinear gain.

    The "network" is local: its output at a bin depends only on that bin.
    """

    def forward(self, x_t, y, t):
        a = expand_time(self.sde.decay(t), x_t)
        V = expand_time(self.marginal_variance(t), x_t)
        gain = y.abs() / (y.abs() + 0.1)
        return -(x_t - a * gain * y - (1 - a) * y) / V


@pytest.fixture
def local_enhancer(stage1, monkeypatch):
    """stage1 with a local score model and a prior "noise" that is a fixed
    function of y per bin.

    The prior sample is the only thing that differs between enhancing in
    chunks and enhancing whole (noise is drawn per chunk). Making it a
    function of y -- whose inner frames are the same in a chunk and in the
    whole signal, because chunks start on the STFT frame grid -- makes the
    two runs comparable sample for sample: with the deterministic ODE
    sampler they must then agree exactly away from the cross-fades. (A
    chunk grid off the frame grid gives errors of up to 15% of the peak
    after the first join with this gain.)
    """
    sde = stage1.sde

    def prior(y, generator=None):
        sigma = sde.std(torch.tensor(sde.T))
        return y + sigma * torch.exp(1j * 1e3 * y.abs())

    monkeypatch.setattr(sde, "prior_sample", prior)
    saved = stage1.score_model  # a submodule: monkeypatch would delete it
    stage1.score_model = LocalGainOracle(sde, s0=0.05)
    yield stage1
    stage1.score_model = saved


def seam_check(out, joins, overlap):
    """Largest step in the joins vs the signal's own sample-to-sample steps."""
    steps = out.diff().abs()
    inside = torch.zeros_like(steps, dtype=torch.bool)
    for start in joins:
        inside[start : start + overlap] = True
    return steps[inside].max(), steps[~inside].max()


# 3 s: the last chunk is 11904 samples; 42096: 6000, less than two overlaps
@pytest.mark.parametrize("num_samples", [3 * SR, 42096])
def test_chunked_matches_whole_away_from_joins(local_enhancer, num_samples):
    enh = local_enhancer
    signal = speechlike(num_samples)
    options = dict(sampler="heun", steps=4)
    whole = enh.enhance_long(signal, chunk_seconds=10, **options)
    assert enh.last_num_chunks == 1
    chunked = enh.enhance_long(
        signal, chunk_seconds=1.0, overlap_seconds=0.25, **options
    )
    assert enh.last_num_chunks == 4
    chunk, overlap = enh.chunk_sizes(1.0, 0.25)
    assert (chunk, overlap) == (16000, 3968)  # whole STFT hops of 128
    hop = chunk - overlap
    joins = [k * hop for k in range(1, 4)]
    away = torch.ones(signal.numel(), dtype=torch.bool)
    for start in joins:
        away[start : start + overlap] = False
    peak = whole.abs().max()
    assert (chunked - whole)[away].abs().max() <= 1e-6 * peak
    # in the joins the chunk edges differ a little; nothing jumps
    assert (chunked - whole).abs().max() < 0.01 * peak
    join_step, own_step = seam_check(chunked, joins, overlap)
    assert join_step <= own_step


def test_chunks_with_real_network_are_seamless_and_reproducible(stage1):
    signal = speechlike(int(2.5 * SR))
    options = dict(
        chunk_seconds=1.0, overlap_seconds=0.25, steps=1, seed=7, max_batch=2
    )
    a = stage1.enhance_long(signal, **options)
    assert a.shape == signal.shape and stage1.last_num_chunks == 3
    assert torch.equal(a, stage1.enhance_long(signal, **options))
    hop = 16000 - 3968
    join_step, own_step = seam_check(a, [hop, 2 * hop], 3968)
    assert join_step <= own_step


def test_global_peak_normalisation_and_bounded_batches(stage1, monkeypatch):
    # quiet first half, loud second half: chunks must keep their levels
    signal = speechlike(3 * SR)
    signal[: SR + SR // 2] *= 0.05
    seen = []
    original = stage1._enhance_normalized

    def spy(wav, lengths, *args):
        seen.append(wav.clone())
        return original(wav, lengths, *args)

    monkeypatch.setattr(stage1, "_enhance_normalized", spy)
    stage1.enhance_long(
        signal, chunk_seconds=1.0, overlap_seconds=0.25, steps=1, seed=0
    )
    # max_batch 1; the final chunk at its true length
    assert [tuple(w.shape) for w in seen] == [(1, 16000)] * 3 + [(1, 11904)]
    peaks = [float(w.abs().max()) for w in seen]
    assert max(peaks) == pytest.approx(1.0)
    assert peaks[0] < 0.1  # the quiet chunk was not renormalised


def test_long_on_short_signal_equals_batch(stage2):
    signal = speechlike(5000)
    long = stage2.enhance_long(signal, seed=11)
    batch = stage2.enhance_batch(signal[None], seed=11)[0]
    assert torch.equal(long, batch)


def test_resampling_and_mix_down(stage1, caplog):
    signal = speechlike(4000)
    with caplog.at_level(logging.INFO, logger="speechbrain_elbo.inference"):
        out = stage1.enhance_long(signal, sample_rate=8000, steps=1, seed=0)
    assert out.shape == (8000,)
    assert "resampling from 8000 Hz" in caplog.text
    stereo = torch.stack([signal, 0.5 * signal])
    with pytest.raises(EnhancementInputError, match="2 channels"):
        stage1.enhance_long(stereo, steps=1)
    mixed = stage1.enhance_long(stereo, mix_down=True, steps=1, seed=0)
    assert torch.equal(
        mixed, stage1.enhance_long(stereo.mean(0), steps=1, seed=0)
    )


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------
# The tiny models have random weights: their outputs depart from their
# inputs (check_output=False) and peak far above them (quiet inputs keep the
# written files within full scale, so that they equal the returned tensors).
QUIET = 1 / 256
FILE_OPTIONS = dict(
    chunk_seconds=1.0, overlap_seconds=0.25, steps=1, seed=4, check_output=False
)


def test_enhance_file_streams_like_enhance_long(stage1, tmp_path):
    signal = QUIET * speechlike(int(2.2 * SR))
    path = tmp_path / "noisy.wav"
    sf.write(path, signal.numpy(), SR, subtype="FLOAT")
    options = FILE_OPTIONS
    in_memory = stage1.enhance_long(signal, **options)
    returned = stage1.enhance_file(path, **options)
    assert torch.equal(returned, in_memory)
    out = tmp_path / "sub" / "enhanced.wav"
    assert torch.equal(stage1.enhance_file(path, out, **options), in_memory)
    written, rate = sf.read(out, dtype="float32")
    assert rate == SR and torch.equal(torch.from_numpy(written), in_memory)
    assert sf.info(str(out)).subtype == "FLOAT"
    assert sorted(os.listdir(out.parent)) == ["enhanced.wav"]  # no temp files
    pcm = tmp_path / "pcm.wav"
    stage1.enhance_file(path, pcm, subtype="PCM_16", **options)
    assert sf.info(str(pcm)).subtype == "PCM_16"


def test_enhance_file_speechbrain_names_and_progress(stage1, tmp_path):
    signal = QUIET * speechlike(int(2.2 * SR))
    path = tmp_path / "noisy.wav"
    sf.write(path, signal.numpy(), SR, subtype="FLOAT")
    out = tmp_path / "enhanced.wav"
    seconds = []
    options = FILE_OPTIONS
    returned = stage1.enhance_file(
        filename=path, output_filename=out, progress=seconds.append, **options
    )
    assert isinstance(returned, torch.Tensor)
    assert returned.shape == signal.shape
    written, _ = sf.read(out, dtype="float32")
    assert torch.equal(torch.from_numpy(written), returned)
    assert torch.equal(returned, stage1.enhance_long(signal, **options))
    # progress: seconds of audio, one call per piece of output, summing to
    # the file's duration
    assert len(seconds) > 1
    assert sum(seconds) == pytest.approx(signal.shape[0] / SR)
    # the bounded-memory variant writes the same file and keeps nothing
    again = tmp_path / "again.wav"
    assert (
        stage1._enhance_file(path, again, False, None, False, **options) is None
    )
    assert np.array_equal(sf.read(again, dtype="float32")[0], written)


def test_enhance_file_other_rate_is_resampled(stage1, tmp_path, caplog):
    path = tmp_path / "noisy8k.flac"
    sf.write(path, speechlike(6000).numpy(), 8000)
    with caplog.at_level(logging.INFO, logger="speechbrain_elbo.inference"):
        out = stage1.enhance_file(path, steps=1, seed=0, check_output=False)
    assert out.shape == (12000,)
    assert "resampling from 8000 Hz" in caplog.text


def test_enhance_file_errors(stage1, tmp_path):
    noisy = tmp_path / "noisy.wav"
    sf.write(noisy, speechlike(4000).numpy(), SR)
    before = noisy.read_bytes()
    with pytest.raises(EnhancementInputError, match="overwrite the input"):
        stage1.enhance_file(noisy, noisy, steps=1)
    with pytest.raises(EnhancementInputError, match="overwrite the input"):
        stage1.enhance_file(noisy, tmp_path / "." / "noisy.wav", steps=1)
    assert noisy.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        stage1.enhance_file(tmp_path / "missing.wav")
    cases = {
        "stereo.wav": (np.zeros((4000, 2)) + 0.1, "2 channels"),
        "silent.wav": (np.zeros(4000), "all zeros"),
        "short.wav": (np.ones(100) * 0.1, "too short"),
        "empty.wav": (np.zeros(0), "empty"),
    }
    for name, (data, match) in cases.items():
        sf.write(tmp_path / name, data, SR)
        with pytest.raises(EnhancementInputError, match=match):
            stage1.enhance_file(tmp_path / name, tmp_path / f"out_{name}")
        assert not (tmp_path / f"out_{name}").exists()
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(EnhancementInputError, match="not a readable audio"):
        stage1.enhance_file(tmp_path / "text.wav")
    nan = tmp_path / "nan.wav"
    data = speechlike(4000).numpy()
    data[7] = np.nan
    sf.write(nan, data, SR, subtype="FLOAT")
    with pytest.raises(EnhancementInputError, match="NaN or Inf"):
        stage1.enhance_file(nan, tmp_path / "out_nan.wav")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_request(tiny_models):
    enhancer = DiffusionEnhancement.from_hparams(
        source=tiny_models[1], run_opts={"device": "cuda:0"}
    )
    noisy = speechlike(4000)[None]
    a = enhancer.enhance_batch(noisy, seed=0)
    assert a.device.type == "cpu"  # returned on the input's device
    b = enhancer.enhance_batch(noisy.cuda(), seed=0)
    assert b.device.type == "cuda"
    assert torch.equal(a, b.cpu())
    long = enhancer.enhance_long(
        speechlike(2 * SR).cuda(), chunk_seconds=1.0, overlap_seconds=0.25
    )
    assert long.device.type == "cuda" and torch.isfinite(long).all()


def test_public_names_live_in_their_modules():
    import importlib.util

    import speechbrain_elbo.inference as inference
    from speechbrain_elbo import audio_input, chunking, fileio

    assert sorted(inference.__all__) == [
        "DiffusionEnhancement",
        "SAMPLER_ALIASES",
        "check_device",
    ]
    # one I/O module: the atomic writers and audio_info live in fileio
    assert importlib.util.find_spec("speechbrain_elbo.audio_output") is None
    assert {"write_audio_atomic", "AtomicAudioWriter", "audio_info"} <= set(
        fileio.__all__
    )
    assert "audio_info" not in audio_input.__all__
    for name in (
        "check_audio_file",
        "refuse_overwrite",
        "EnhancementInputError",
    ):
        assert name in audio_input.__all__, name
    for name in ("chunk_layout", "chunk_windows", "crossfade_windows"):
        assert name in chunking.__all__, name


def test_outputs_beyond_full_scale_are_scaled_not_clipped(
    stage1, tmp_path, caplog
):
    path = tmp_path / "noisy.wav"
    # a float file may exceed full scale; so does its enhancement
    sf.write(path, 4 * speechlike(4000).numpy(), SR, subtype="FLOAT")
    options = dict(steps=1, seed=0, check_output=False)
    enhanced = stage1.enhance_file(path, **options)
    peak = float(enhanced.abs().max())
    assert peak > 1  # the returned waveform is not scaled
    for subtype in ("PCM_16", None):
        out = tmp_path / f"out_{subtype}.wav"
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            stage1.enhance_file(path, out, subtype=subtype, **options)
        written, _ = sf.read(out, dtype="float32")
        assert np.abs(written).max() <= 1.0
        # a gain, not a clip: the samples keep their ratios
        assert np.allclose(written, (enhanced / peak).numpy(), atol=1 / 2**14)
        said = [
            r for r in caplog.records if r.name == "speechbrain_elbo.fileio"
        ]
        assert len(said) == 1  # once per file
        assert "scaled by" in said[0].message and "not clipped" in caplog.text
        assert "were clipped" not in caplog.text
