"""Faults and bad inputs at inference: what is fed, what must happen.

Each table below is one kind of fault; each row says what is fed and what
must happen, and docs/inference.md ("Reliability") lists the same rows.
The command line runs in-process (``speechbrain_elbo.cli.main``) with the
bundled model ``minivb-small`` and 0.6 s inputs; bad inputs stop it
before the model is loaded, so most rows take a fraction of a second.

- ``GOOD``: inputs a new user may have (clipped, very loud, DC offset,
  8/22.05/44.1/48 kHz, 24-bit, float, stereo): one run over a folder of
  them; every output must be a 16 kHz file within full scale.
- ``BAD``: inputs that cannot be enhanced: exit status 1, exactly one
  line on stderr naming the file and the problem, nothing written.
- ``SETTINGS``: command-line settings that cannot work: refused in one
  line before the model is loaded.
- The other tests: a folder mixing good and bad files, unwritable output
  folders, a sampler that returns garbage, model folders that would run
  code (the allow-list, weights-only checkpoints), the device of
  ``from_hparams``, and the audio writer.
"""

import os
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_elbo import pretrained
from speechbrain_elbo.cli import main
from speechbrain_elbo.corpus import read_manifest
from speechbrain_elbo.export import ModelFolderError, load_folder
from speechbrain_elbo.fileio import write_audio_atomic
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.minidata import DEFAULT_SAMPLES
from speechbrain_elbo.minidata.signals import mix_at_snr
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.trust import UntrustedModelError

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROG = "speechbrain-elbo-enhance"
BUNDLED = pretrained.pretrained_path("minivb-small")
SR = 16000
#: The bundled model's own sampler (Euler), 2 steps: fast, and sane.
FAST = ["--steps", "2", "--seed", "0", "--quiet"]


def speech(seconds=0.6, rate=SR):
    """Noisy speech (5 dB SNR, -26 dBFS) from the package's samples."""
    clean, _ = sf.read(DEFAULT_SAMPLES / "speech_en.wav", dtype="float64")
    noise, _ = sf.read(DEFAULT_SAMPLES / "noise_vinyl_hiss.wav")
    clean = clean[SR // 2 : SR // 2 + int(seconds * SR)]
    _, noisy, _ = mix_at_snr(clean, noise[: len(clean)], 5.0, -26.0)
    if rate != SR:
        import torchaudio.functional as AF

        noisy = AF.resample(torch.from_numpy(noisy), SR, rate).numpy()
    return noisy


def peak_one(x):
    return x / np.abs(x).max()


#: Good inputs: (file, how it is made, soundfile subtype).
GOOD = [
    ("clipped.wav", lambda: np.clip(30 * peak_one(speech()), -1, 1), "PCM_16"),
    ("loud_float.wav", lambda: 40 * peak_one(speech()), "FLOAT"),
    ("dc_offset.wav", lambda: 0.5 + 0.3 * peak_one(speech()), "PCM_16"),
    ("rate_8k.wav", lambda: speech(rate=8000), "PCM_16"),
    ("rate_22k.wav", lambda: speech(rate=22050), "PCM_16"),
    ("rate_44k.flac", lambda: speech(rate=44100), "PCM_16"),
    ("rate_48k.wav", lambda: speech(rate=48000), "PCM_16"),
    ("pcm24.wav", lambda: speech(), "PCM_24"),
    ("float.wav", lambda: speech(), "FLOAT"),
    ("stereo.wav", lambda: np.stack([speech(), speech()[::-1]], 1), "PCM_16"),
]

#: File rates of the inputs above (the name says the rate, else 16 kHz).
RATES = {"rate_8k": 8000, "rate_22k": 22050, "rate_44k": 44100}
RATES["rate_48k"] = 48000


def write_good(folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name, make, subtype in GOOD:
        rate = RATES.get(pathlib.Path(name).stem, SR)
        sf.write(folder / name, make(), rate, subtype=subtype)


def lines(capsys):
    return capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """One command over the folder of good inputs: status, outputs, log."""
    root = tmp_path_factory.mktemp("good")
    write_good(root / "in")
    out = root / "out"
    status = main([str(root / "in"), "--out", str(out), "--mix-down", *FAST])
    return status, out


def test_good_inputs_finish(good_run):
    status, out = good_run
    assert status == 0
    rows = read_manifest(out / "manifest.csv")
    assert {row["status"] for row in rows} == {"enhanced"}
    assert len(rows) == len(GOOD)


@pytest.mark.parametrize("name", [name for name, _, _ in GOOD])
def test_good_input_gives_a_file_within_full_scale(good_run, name):
    """Every output: 16 kHz mono float WAV, |x| <= 1, finite, not silent."""
    _, out = good_run
    path = out / pathlib.Path(name).with_suffix(".wav")
    data, rate = sf.read(path, dtype="float32")
    assert rate == SR and data.ndim == 1
    assert np.isfinite(data).all()
    assert 0.0 < np.abs(data).max() <= 1.0


def test_a_loud_input_is_scaled_into_full_scale_and_logged(tmp_path, caplog):
    """A float input at 40 times full scale: the enhancement returned by
    enhance_batch keeps that level (documented), the written file is the
    same audio divided by its peak, and one log line says so."""
    sf.write(tmp_path / "loud.wav", 40 * peak_one(speech()), SR, "FLOAT")
    with caplog.at_level("WARNING"):
        path = str(tmp_path / "loud.wav")
        assert main([path, "--out", str(tmp_path / "o"), *FAST]) == 0
    enhancer = DiffusionEnhancement.from_hparams("minivb-small")
    returned = enhancer.enhance_batch(
        torch.from_numpy(40 * peak_one(speech())).float(), steps=2, seed=0
    )
    assert float(returned.abs().max()) > 1.0
    written, _ = sf.read(tmp_path / "o" / "loud.wav", dtype="float32")
    assert np.abs(written).max() == pytest.approx(1.0)
    said = [r.message for r in caplog.records if "scaled by" in r.message]
    assert len(said) == 1 and "loud.wav" in said[0]


#: Bad inputs: (case, how the file is made, extra arguments, fragment of
#: the one stderr line).
BAD = [
    ("missing", None, [], "does not exist"),
    ("not audio", lambda p: p.write_text("not audio"), [], "not a readable"),
    ("empty", lambda p: sf.write(p, np.zeros(0), SR), [], "is empty"),
    ("all zeros", lambda p: sf.write(p, np.zeros(SR), SR), [], "all zeros"),
    (
        "NaN sample",
        lambda p: sf.write(p, np.r_[speech(), np.nan], SR, "FLOAT"),
        [],
        "NaN or Inf",
    ),
    (
        "stereo",
        lambda p: sf.write(p, np.stack([speech()] * 2, 1), SR),
        [],
        "2 channels; pass --mix-down",
    ),
    (
        "5 ms",
        lambda p: sf.write(p, speech()[:80], SR),
        [],
        "too short to enhance",
    ),
]


@pytest.mark.parametrize(
    "make, args, message", [row[1:] for row in BAD], ids=[r[0] for r in BAD]
)
def test_bad_input_is_one_line_and_nothing_is_written(
    tmp_path, capsys, make, args, message
):
    path = tmp_path / "input.wav"
    if make is not None:
        make(path)
    out = tmp_path / "out"
    assert main([str(path), "--out", str(out), *FAST, *args]) == 1
    (line,) = lines(capsys)
    assert line.startswith(f"{PROG}: error: ") and message in line
    assert str(path) in line
    assert not out.exists()


#: Settings that cannot work: (arguments, fragment of the one line).
SETTINGS = [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--corrector-steps", "-1"], "--corrector-steps must be >= 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--device", "tpu"], "--device tpu: unknown device type"),
    (["--overwrite", "--resume"], "pass one of them"),
]


@pytest.mark.parametrize("args, message", SETTINGS)
def test_bad_setting_is_one_line_before_loading(
    tmp_path, capsys, monkeypatch, args, message
):
    sf.write(tmp_path / "a.wav", speech(), SR)

    def no_loading(*_, **__):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(DiffusionEnhancement, "from_hparams", no_loading)
    out = tmp_path / "out"
    assert main([str(tmp_path / "a.wav"), "--out", str(out), *args]) == 1
    (line,) = lines(capsys)
    assert message in line and not out.exists()


def test_folder_with_bad_files_reports_every_one_before_loading(
    tmp_path, capsys, monkeypatch
):
    """Two good wavs, a text file named .wav, an empty .wav, a README:
    without --skip-errors both bad files are named (one line each) and
    nothing is loaded or written; with it the good files are enhanced, the
    bad ones are manifest rows, and the status is 3."""
    data = tmp_path / "folder"
    data.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(data / name, speech(), SR)
    (data / "notes.wav").write_text("these are notes, not audio")
    sf.write(data / "empty.wav", np.zeros(0), SR)
    (data / "README.txt").write_text("ignored: not an audio suffix")
    out = tmp_path / "out"
    loads = []
    original = DiffusionEnhancement.from_hparams.__func__

    def spy(cls, *args, **kwargs):
        loads.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(DiffusionEnhancement, "from_hparams", classmethod(spy))
    assert main([str(data), "--out", str(out), *FAST]) == 1
    said = lines(capsys)
    assert len(said) == 3 and not loads and not out.exists()
    assert "empty.wav is empty" in said[0] and "notes.wav" in said[1]
    assert "2 of 4 inputs" in said[2] and "--skip-errors" in said[2]
    assert main([str(data), "--out", str(out), *FAST, "--skip-errors"]) == 3
    assert len(lines(capsys)) == 2 and loads
    rows = {
        pathlib.Path(r["input"]).name: r
        for r in read_manifest(out / "manifest.csv")
    }
    assert {name: row["status"] for name, row in rows.items()} == {
        "a.wav": "enhanced",
        "b.wav": "enhanced",
        "empty.wav": "failed",
        "notes.wav": "failed",
    }
    assert sorted(p.name for p in out.iterdir()) == [
        "a.wav",
        "b.wav",
        "manifest.csv",
    ]


@pytest.mark.parametrize(
    "where, message",
    [("under_a_file", "is a file, not a folder"), ("proc", "not writable")],
)
def test_unwritable_output_folder_is_named_before_loading(
    tmp_path, capsys, monkeypatch, where, message
):
    """The output folder is tried before the model is loaded; the line
    names that folder, not a hidden temporary file. (/proc refuses new
    files even to root, who may write into a read-only folder.)"""
    sf.write(tmp_path / "a.wav", speech(), SR)
    if where == "proc":
        if not pathlib.Path("/proc/self").is_dir():
            pytest.skip("no /proc on this system")
        out = pathlib.Path("/proc/speechbrain_elbo_out")
    else:
        (tmp_path / "file").write_text("in the way")
        out = tmp_path / "file" / "out"

    def no_loading(*_, **__):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(DiffusionEnhancement, "from_hparams", no_loading)
    assert main([str(tmp_path / "a.wav"), "--out", str(out), *FAST]) == 1
    (line,) = lines(capsys)
    assert message in line and str(out) in line
    assert "/." not in line  # no hidden temporary file


def test_garbage_from_too_few_pc_steps_is_refused_per_file(tmp_path, capsys):
    """The predictor-corrector sampler with 3 steps on a clipped input
    (the issue's case): the file fails with the settings to change, is not
    written, and the status is 3; --no-output-check writes it (within
    full scale)."""
    path = tmp_path / "clipped.wav"
    sf.write(path, np.clip(30 * peak_one(speech()), -1, 1), SR)
    args = [str(path), "--sampler", "pc", "--steps", "3", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 3
    (line,) = lines(capsys)
    assert "clipped.wav: the output departs from the input" in line
    assert "sampler pc, 3 steps" in line and "raise the steps" in line
    assert not (tmp_path / "o" / "clipped.wav").exists()
    rows = read_manifest(tmp_path / "o" / "manifest.csv")
    assert rows[0]["status"] == "failed"
    out = tmp_path / "written"
    assert main([*args, "--out", str(out), "--no-output-check"]) == 0
    assert np.abs(sf.read(out / "clipped.wav")[0]).max() <= 1.0


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(steps=2.5), "steps must be an integer >= 1"),
        (dict(corrector_steps=-1), "corrector_steps must be an integer >= 0"),
        (dict(snr=-0.5), "snr must be a number > 0"),
        (dict(snr=0.0), "snr must be a number > 0"),
        (dict(snr=float("nan")), "snr must be a number > 0"),
    ],
)
def test_invalid_sampler_settings_are_refused_where_made(settings, message):
    with pytest.raises(ValueError, match=message):
        Sampler("pc", **{"steps": 30, **settings})


def test_invalid_settings_are_refused_before_enhancing():
    enhancer = DiffusionEnhancement.from_hparams("minivb-small")
    with pytest.raises(ValueError, match="snr must be a number > 0"):
        enhancer.enhance_batch(torch.ones(1000), sampler="pc", snr=-1.0)
    assert enhancer.last_nfe is None  # nothing ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_one_line_in_python_and_on_the_command_line(
    tmp_path, capsys
):
    with pytest.raises(ValueError) as raised:
        DiffusionEnhancement.from_hparams(
            "minivb-small", run_opts={"device": "cuda:0"}
        )
    message = str(raised.value)
    assert "\n" not in message
    assert message.endswith(
        "cuda:0: no CUDA device is available on this machine; use cpu"
    )
    sf.write(tmp_path / "a.wav", speech(), SR)
    status = main(
        [
            str(tmp_path / "a.wav"),
            "--out",
            str(tmp_path / "o"),
            "--device",
            "cuda:0",
        ]
    )
    assert status == 1
    (line,) = lines(capsys)
    assert line.endswith(message.split(" ", 2)[-1])  # the same wording


def untrusted_folder(root, payload):
    """A copy of the bundled model whose hyperparams.yaml also calls
    ``os.makedirs(payload)`` (its checksums still match: they cover the
    checkpoints only)."""
    folder = root / "untrusted"
    shutil.copytree(BUNDLED, folder)
    text = (folder / "hyperparams.yaml").read_text()
    text += f"\nsurprise: !apply:os.makedirs\n    - {payload}\n"
    (folder / "hyperparams.yaml").write_text(text)
    return folder


def test_a_model_folder_that_would_run_code_is_refused(tmp_path, capsys):
    payload = tmp_path / "payload_ran"
    folder = untrusted_folder(tmp_path, payload)
    # Python: refused on request, before anything is built
    with pytest.raises(UntrustedModelError, match="line .*os.makedirs"):
        DiffusionEnhancement.from_hparams(folder, check_yaml=True)
    assert not payload.exists()
    # the command line checks by default: one line, nothing run
    sf.write(tmp_path / "a.wav", speech(), SR)
    args = [str(tmp_path / "a.wav"), "--model", str(folder), *FAST]
    assert main([*args, "--out", str(tmp_path / "o")]) == 1
    (line,) = lines(capsys)
    assert "not on the allow-list" in line and "--trust-model" in line
    assert not payload.exists()
    # without the check the YAML runs: the check is what stood in the way
    assert main([*args, "--out", str(tmp_path / "o2"), "--trust-model"]) == 0
    assert payload.is_dir()


@pytest.mark.parametrize(
    "tag",
    [
        "!new:subprocess.Popen",
        "!name:torch.hub.load",
        "!apply:speechbrain.inference.interfaces.foreign_class",
        "!new:speechbrain_elbo.lobes.ncsnpp.torch.nn.Linear",
        "!include:other.yaml",
        "!!python/object/apply:os.system",
    ],
)
def test_the_allow_list_refuses(tmp_path, tag):
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED, folder)
    with open(folder / "hyperparams.yaml", "a") as handle:
        handle.write(f"\nextra: {tag} [x]\n")
    with pytest.raises(UntrustedModelError):
        load_folder(folder, check_yaml=True)


class _Payload:
    """Pickles as a call to os.makedirs(path)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_checkpoints_are_read_weights_only(tmp_path):
    """A checkpoint that would run code when unpickled is refused, by the
    model-folder loader and by SpeechBrain's checkpoint recovery (the
    recipes'), and the code does not run."""
    payload = tmp_path / "payload_ran"
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED, folder)
    torch.save({"weight": _Payload(payload)}, folder / "score_model.ckpt")
    with pytest.raises(ModelFolderError, match="corrupt or not a PyTorch"):
        load_folder(folder, verify_checksums=False)
    from speechbrain.utils.checkpoints import torch_recovery

    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        torch_recovery(
            torch.nn.Linear(2, 2), folder / "score_model.ckpt", False
        )
    assert not payload.exists()


def test_every_torch_load_in_the_code_is_weights_only():
    """Every torch.load call of the package, recipes, tools and benchmarks
    passes weights_only=True."""
    calls = []
    for part in ("speechbrain_elbo", "recipes", "tools", "bench"):
        for path in (ROOT / part).rglob("*.py"):
            text = path.read_text()
            start = text.find("torch.load(")
            while start >= 0:
                depth, end = 0, start + len("torch.load")
                while True:  # to the matching parenthesis
                    depth += {"(": 1, ")": -1}.get(text[end], 0)
                    if depth == 0:
                        break
                    end += 1
                calls.append((path.relative_to(ROOT), text[start : end + 1]))
                start = text.find("torch.load(", end)
    assert len(calls) >= 3
    unsafe = [str(p) for p, call in calls if "weights_only=True" not in call]
    assert not unsafe, unsafe


@pytest.mark.parametrize(
    "suffix, subtype",
    [(".wav", None), (".wav", "PCM_16"), (".wav", "PCM_24"), (".flac", None)],
)
def test_the_writer_scales_every_format_into_full_scale(
    tmp_path, suffix, subtype
):
    signal = np.sin(np.linspace(0, 60, 4000)) * 3.0
    path = tmp_path / f"out{suffix}"
    write_audio_atomic(path, signal, SR, subtype)
    written, _ = sf.read(path)
    assert np.abs(written).max() <= 1.0
    assert np.allclose(written, signal / 3.0, atol=1e-4)  # a gain, no clip
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_the_writer_refuses_nan_and_names_the_target(tmp_path):
    with pytest.raises(ValueError, match="NaN or infinite; nothing was"):
        write_audio_atomic(tmp_path / "a.wav", np.array([0.1, np.nan]), SR)
    (tmp_path / "file").write_text("in the way")
    target = tmp_path / "file" / "a.wav"
    with pytest.raises(OSError, match=f"Cannot write {target}"):
        write_audio_atomic(target, np.zeros(10), SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_sigterm_while_writing_leaves_no_temporary_file(tmp_path):
    """A scheduler's SIGTERM during a long file: status 143, one line, no
    output and no hidden temporary file (only the manifest part, the
    record of the run); --resume then finishes the file."""
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "long.wav"
    sf.write(path, np.tile(speech(1.0), 4), SR)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "speechbrain_elbo", str(path), "--out"]
    args += [str(out), *FAST, "--no-refiner"]
    args += ["--chunk-seconds", "1", "--overlap-seconds", "0.25"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not list(out.glob(".long.wav.*")) and run.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    assert err.strip().splitlines() == [f"{PROG}: terminated"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.rank0-of-1.csv"]
    resumed = subprocess.run([*args, "--resume"], env=env)
    assert resumed.returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["long.wav", "manifest.csv"]
