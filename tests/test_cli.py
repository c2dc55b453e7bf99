"""The speechbrain-elbo-enhance command line."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import tqdm.auto

from speechbrain_elbo import pretrained
from speechbrain_elbo.cli import main, resolve_model
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.pipeline import utterance_seed

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_models):
    """The two-stage tiny model."""
    return tiny_models[1]


def noise(num_samples, seed):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(num_samples)).astype("float32")


@pytest.fixture
def inputs(tmp_path):
    """Three equal-length files in a folder tree, one other, one 8 kHz."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("a.wav", "b.wav", "sub/c.flac"):
        sf.write(data / name, noise(4000, len(name)), SR)
    sf.write(data / "d.wav", noise(6000, 9), SR)
    (data / "readme.txt").write_text("not audio")
    single = tmp_path / "single.wav"
    sf.write(single, noise(3000, 5), 8000)
    return data, single


def run(model, *args):
    # the tiny model has random weights: its outputs depart from the inputs
    return main(
        ["--model", str(model), *map(str, args), "--quiet", "--no-output-check"]
    )


def test_files_and_folders(model, inputs, tmp_path, monkeypatch):
    data, single = inputs
    batches = []
    original = DiffusionEnhancement.enhance_batch

    def spy(self, noisy, *a, **k):
        batches.append(tuple(noisy.shape))
        return original(self, noisy, *a, **k)

    monkeypatch.setattr(DiffusionEnhancement, "enhance_batch", spy)
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    status = run(
        model, data, single, "--out", out, "--steps", "1", "--batch-size", "2"
    )
    assert status == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert written == [
        "a.wav",
        "b.wav",
        "d.wav",
        "manifest.csv",
        "single.wav",
        "sub",
        "sub/c.wav",
    ]
    # equal-length files at the model's rate are batched (batch size 2)
    assert sorted(batches) == [(1, 4000), (1, 6000), (2, 4000)]
    for name, length in [("a", 4000), ("sub/c", 4000), ("single", 6000)]:
        info = sf.info(str(out / f"{name}.wav"))
        assert (info.samplerate, info.frames) == (SR, length)
    # inputs untouched, no temporary files left
    assert {p: p.read_bytes() for p in before} == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_seed_and_options_are_applied(model, inputs, tmp_path):
    data, _ = inputs
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    options = ["--steps", "1", "--sampler", "euler", "--no-refiner"]
    assert run(model, data / "a.wav", "--out", a, *options, "--seed", "3") == 0
    assert run(model, data / "a.wav", "--out", b, *options, "--seed", "3") == 0
    assert run(model, data / "a.wav", "--out", c, *options, "--seed", "4") == 0
    first, second, third = (sf.read(d / "a.wav")[0] for d in (a, b, c))
    assert np.array_equal(first, second)
    assert not np.allclose(first, third)
    enhancer = DiffusionEnhancement.from_hparams(source=model)
    expected = enhancer.enhance_batch(
        enhancer.load_waveform(data / "a.wav")[None],
        sampler="euler",
        steps=1,
        use_refiner=False,
        seed=utterance_seed(3, "a.wav"),  # the file's own noise
    )[0]
    # the file is within full scale: scaled by its peak when beyond it
    expected = expected / max(1.0, float(expected.abs().max()))
    assert np.allclose(first, expected.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "make, args, message",
    [
        (None, ["missing.wav"], "input missing.wav does not exist"),
        ("stereo", ["stereo.wav"], "2 channels; pass --mix-down"),
        ("silent", ["silent.wav"], "all zeros"),
        ("short", ["short.wav"], "too short"),
        ("text", ["text.wav"], "not a readable audio file"),
        ("empty", ["empty.wav"], "empty.wav is empty (no samples)"),
        ("a", ["a.wav", "--steps", "0"], "--steps must be >= 1"),
        ("a", ["a.wav", "--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_input_one_line_and_status(
    model, tmp_path, capsys, monkeypatch, make, args, message
):
    monkeypatch.chdir(tmp_path)
    if make == "stereo":
        sf.write("stereo.wav", np.stack([noise(4000, 1)] * 2, axis=1), SR)
    elif make == "silent":
        sf.write("silent.wav", np.zeros(4000), SR)
    elif make == "short":
        sf.write("short.wav", noise(100, 1), SR)
    elif make == "empty":
        sf.write("empty.wav", np.zeros(0), SR)
    elif make == "text":
        pathlib.Path("text.wav").write_text("nothing")
    elif make == "a":
        sf.write("a.wav", noise(4000, 1), SR)
    if "cuda" in " ".join(args) and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    status = run(model, *args, "--out", "out")
    err = capsys.readouterr().err
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("speechbrain-elbo-enhance")
    assert message in lines[0]
    assert not any(pathlib.Path("out").rglob("*.wav"))


def test_mix_down(model, tmp_path):
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([noise(4000, 1), noise(4000, 2)], axis=1), SR)
    out = tmp_path / "out"
    assert run(model, stereo, "--out", out, "--steps", "1", "--mix-down") == 0
    assert sf.info(str(out / "stereo.wav")).channels == 1


def test_never_overwrites(model, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "a.wav", noise(4000, 1), SR)
    original = (data / "a.wav").read_bytes()
    # writing next to the input would replace it
    assert run(model, data / "a.wav", "--out", data, "--steps", "1") == 1
    assert "overwrite an input" in capsys.readouterr().err
    assert (data / "a.wav").read_bytes() == original
    # an existing output needs --overwrite
    out = tmp_path / "out"
    assert run(model, data / "a.wav", "--out", out, "--steps", "1") == 0
    assert run(model, data / "a.wav", "--out", out, "--steps", "1") == 1
    assert "--overwrite" in capsys.readouterr().err
    args = ("--steps", "1", "--overwrite")
    assert run(model, data / "a.wav", "--out", out, *args) == 0
    # two inputs that map to the same output are refused
    sf.write(data / "a.flac", noise(4000, 2), SR)
    both = (data / "a.wav", data / "a.flac")
    assert run(model, *both, "--out", tmp_path / "o2") == 1
    assert "would both be written" in capsys.readouterr().err


def test_long_file_is_chunked(model, tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, noise(int(2.5 * SR), 3), SR)
    out = tmp_path / "out"
    args = ["--steps", "1", "--chunk-seconds", "1", "--overlap-seconds", "0.25"]
    assert run(model, path, "--out", out, *args) == 0
    enhanced, rate = sf.read(out / "long.wav", dtype="float32")
    assert rate == SR and enhanced.shape == (int(2.5 * SR),)
    enhancer = DiffusionEnhancement.from_hparams(
        source=model, chunk_seconds=1, overlap_seconds=0.25
    )
    expected = enhancer.enhance_file(
        path, steps=1, seed=utterance_seed(0, "long.wav"), check_output=False
    )
    # the file is within full scale: scaled by its peak when beyond it
    expected = expected / max(1.0, float(expected.abs().max()))
    assert np.array_equal(enhanced, expected.numpy())


def test_python_dash_m(model, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_elbo.cli", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0
    assert "--no-refiner" in result.stdout and "--sampler" in result.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "speechbrain_elbo.cli", "--model", str(model)]
        + [str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith("nope.wav does not exist")


def test_python_dash_m_package_shows_example():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "speechbrain_elbo", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: speechbrain-elbo-enhance")
    assert "example:" in result.stdout
    example = "speechbrain-elbo-enhance noisy.wav recordings/ --out enhanced/"
    assert example in result.stdout


def test_console_script():
    script = pathlib.Path(sys.executable).parent / "speechbrain-elbo-enhance"
    if not script.exists():
        pytest.skip("the package is not installed with its console script")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--model" in result.stdout


def test_default_model_is_bundled(tmp_path, capsys, monkeypatch):
    sources = []
    original = DiffusionEnhancement.from_hparams.__func__

    def spy(cls, source, *args, **kwargs):
        sources.append(source)
        return original(cls, source, *args, **kwargs)

    monkeypatch.setattr(DiffusionEnhancement, "from_hparams", classmethod(spy))
    path = tmp_path / "a.wav"
    sf.write(path, noise(SR // 2, 1), SR)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), "--steps", "1"]) == 0
    bundled = pretrained.pretrained_path(pretrained.DEFAULT_MODEL)
    assert sources == [str(bundled)]
    assert sf.info(str(out / "a.wav")).frames == SR // 2
    notes = [
        line
        for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
        if "--model" in line
    ]
    assert len(notes) == 1
    assert "using the bundled model minivb-small" in notes[0]


def test_bundled_name_and_folder_are_accepted(model, capsys):
    bundled = pretrained.pretrained_path("minivb-small")
    assert resolve_model("minivb-small") == str(bundled)
    assert resolve_model(str(model)) == str(model)
    assert capsys.readouterr().err == ""  # no note when --model is given
    assert resolve_model(None, quiet=True) == str(bundled)
    assert capsys.readouterr().err == ""


def test_unknown_model_name_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "a.wav"
    sf.write(path, noise(4000, 1), SR)
    status = main(["--model", "no-such-model", str(path), "--out", "o"])
    assert status == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("speechbrain-elbo-enhance: error: --model")
    assert "no-such-model" in lines[0]
    assert "bundled models: minivb-small" in lines[0]


def test_progress_counts_seconds_of_audio(model, inputs, tmp_path, monkeypatch):
    bars = []

    class Recorder(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.updates = []
            bars.append(self)

        def update(self, n=1):
            self.updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    data, single = inputs
    long = tmp_path / "long.wav"
    sf.write(long, noise(int(2.5 * SR), 3), SR)
    args = ["--steps", "1", "--chunk-seconds", "1", "--overlap-seconds", "0.25"]
    args.append("--no-output-check")  # the tiny model's weights are random
    files = [str(f) for f in (data, single, long)]
    out = str(tmp_path / "o")
    assert main(["--model", str(model), *files, "--out", out, *args]) == 0
    (bar,) = bars
    # 3 files of 4000 samples and one of 6000 at 16 kHz, 3000 at 8 kHz,
    # 2.5 s at 16 kHz
    assert bar.total == pytest.approx(0.75 + 0.375 + 0.375 + 2.5)
    assert bar.n == pytest.approx(bar.total)
    # per batch (3 files, then 1), per file (one chunk), then the long file
    # chunk group by chunk group
    assert bar.updates[:3] == pytest.approx([0.75, 0.375, 0.375])
    assert len(bar.updates) == 6
    assert sum(bar.updates[3:]) == pytest.approx(2.5)
    assert all(0 < n <= 1.0 for n in bar.updates)
