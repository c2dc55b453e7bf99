"""Corpus enhancement: torchrun shards, resume, manifest (issue 19).

40 tiny speech-like files (0.30 to 0.50 s at 16 kHz, in 4 speaker folders)
enhanced by the bundled model with one predictor-corrector step and no
refiner (noise drawn three times per step), on the CPU with one thread.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_elbo.cli import main
from speechbrain_elbo.corpus import (
    balance_units,
    plan_units,
    read_manifest,
)
from speechbrain_elbo.fileio import AudioInfo

ROOT = pathlib.Path(__file__).resolve().parents[1]
SR = 16000
NUM_FILES = 40
LENGTHS = (4800, 5600, 6400, 7200, 8000)
OPTIONS = [
    "--model",
    "minivb-small",
    "--sampler",
    "pc",
    "--steps",
    "1",
    "--no-refiner",
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--quiet",
    # one PC step is fast garbage, which the output check would refuse
    "--no-output-check",
]
pytestmark = pytest.mark.usefixtures("one_thread")


def speech_like(index):
    """A voiced, syllable-modulated harmonic signal with a little noise."""
    rng = np.random.default_rng(index)
    length = LENGTHS[index % len(LENGTHS)]
    t = np.arange(length) / SR
    f0 = 110 + 60 * rng.random() + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    noise = 0.02 * rng.standard_normal(length)
    return (0.1 * voiced * envelope + noise).astype("float32")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus") / "in"
    for index in range(NUM_FILES):
        path = root / f"spk{index % 4}" / f"utt{index:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speech_like(index), SR)
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The corpus enhanced by one process (this one)."""
    out = tmp_path_factory.mktemp("one") / "out"
    assert main([str(corpus), "--out", str(out), *OPTIONS]) == 0
    return out


def torchrun(*args, processes=2):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "speechbrain_elbo",
        *map(str, args),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outputs(folder):
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*.wav"))
    }


def test_plan_is_balanced_by_duration_and_independent_of_ranks(corpus):
    infos = [
        AudioInfo(sf.info(str(p)).frames, SR, 1)
        for p in sorted(corpus.rglob("*.wav"))
    ]
    units = plan_units(infos, SR, 10 * SR, batch_size=4)
    # equal-length files batched, every file in exactly one unit
    members = sorted(i for unit in units for i in unit.members)
    assert members == list(range(NUM_FILES))
    for unit in units:
        assert len({infos[i].frames for i in unit.members}) == 1
    seconds = [unit.seconds for unit in units]
    for world in (1, 2, 3):
        shards = balance_units(seconds, world)
        assert sorted(i for shard in shards for i in shard) == list(
            range(len(units))
        )
        loads = [sum(seconds[i] for i in shard) for shard in shards]
        # balanced by duration: within the longest unit
        assert max(loads) - min(loads) <= max(seconds) + 1e-9
        assert balance_units(seconds, world) == shards
    # balanced by duration, not by count: one long unit against many short
    assert balance_units([10.0, 1.0, 1.0, 1.0, 1.0], 2) == [[0], [1, 2, 3, 4]]


def test_two_processes_give_the_bytes_of_one(corpus, reference, tmp_path):
    out = tmp_path / "out"
    run = torchrun(corpus, "--out", out, *OPTIONS)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-2000:]
    one, two = outputs(reference), outputs(out)
    assert len(one) == NUM_FILES and sorted(two) == sorted(one)
    different = [k for k in one if one[k].read_bytes() != two[k].read_bytes()]
    assert different == []
    rows = read_manifest(out / "manifest.csv")
    assert [row["input"] for row in rows] == [
        str(p) for p in sorted(corpus.rglob("*.wav"))
    ]
    assert {row["status"] for row in rows} == {"enhanced"}
    assert {row["nfe"] for row in rows} == {"2"}  # one corrector step
    # both ranks worked, on shares of equal duration (20 s x 0.4 s)
    per_rank = {}
    for row in rows:
        per_rank.setdefault(row["rank"], []).append(float(row["duration"]))
    assert sorted(per_rank) == ["0", "1"]
    assert abs(sum(per_rank["0"]) - sum(per_rank["1"])) <= 4 * 0.5
    assert list(out.glob("manifest.rank*")) == []  # parts merged, removed


def test_killed_run_resumes_without_redoing(corpus, reference, tmp_path):
    out = tmp_path / "out"
    run = torchrun(corpus, "--out", out, *OPTIONS)
    # stopped as a scheduler stops a job (SIGTERM to torchrun, which stops
    # its workers) once the first batches are written
    deadline = time.monotonic() + 240
    while len(outputs(out)) < 8 and run.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=120)
    finished = outputs(out)
    assert 0 < len(finished) < NUM_FILES, "the run was not stopped halfway"
    # the ranks' parts are the record of the killed run
    parts = list(out.glob("manifest.rank*-of-2.csv"))
    recorded = [row for part in parts for row in read_manifest(part)]
    assert recorded and {row["status"] for row in recorded} == {"enhanced"}
    assert all(pathlib.Path(row["output"]).is_file() for row in recorded)
    stamps = {key: path.stat().st_mtime_ns for key, path in finished.items()}
    # without --resume the finished outputs are not touched
    assert main([str(corpus), "--out", str(out), *OPTIONS]) == 1
    # restarted (here by one process) it does only what was left
    status = main([str(corpus), "--out", str(out), *OPTIONS, "--resume"])
    assert status == 0
    rows = {row["output"]: row for row in read_manifest(out / "manifest.csv")}
    assert len(rows) == NUM_FILES
    for key, path in outputs(out).items():
        expected = "skipped" if key in finished else "enhanced"
        assert rows[str(path)]["status"] == expected
        assert path.read_bytes() == (reference / key).read_bytes()
    after = {key: path.stat().st_mtime_ns for key, path in finished.items()}
    assert after == stamps
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    assert list(out.glob("manifest.rank*")) == []


def test_failures_are_listed_and_the_others_go_on(corpus, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a", "b", "c"):
        (data / f"{name}.wav").write_bytes(
            (corpus / "spk0" / "utt00.wav").read_bytes()
        )
    (data / "corrupt.wav").write_text("not audio")
    sf.write(data / "silent.wav", np.zeros(4800, "float32"), SR)
    out = tmp_path / "out"
    manifest = tmp_path / "report" / "all.csv"
    args = [str(data), "--out", str(out), *OPTIONS, "--manifest", manifest]
    # without --skip-errors: every bad file, then stop before the model
    assert main(list(map(str, args))) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "2 of 5 inputs" in errors[-1]
    assert not out.exists() and not manifest.exists()
    # with it: the others are enhanced, and the status says some were not
    assert main(list(map(str, [*args, "--skip-errors"]))) == 3
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    rows = {pathlib.Path(r["input"]).name: r for r in read_manifest(manifest)}
    assert sorted(rows) == [
        "a.wav",
        "b.wav",
        "c.wav",
        "corrupt.wav",
        "silent.wav",
    ]
    assert rows["corrupt.wav"]["status"] == "failed"
    assert "not a readable audio file" in rows["corrupt.wav"]["reason"]
    assert rows["silent.wav"]["status"] == "failed"
    assert "all zeros" in rows["silent.wav"]["reason"]
    for name in ("a.wav", "b.wav", "c.wav"):
        assert rows[name]["status"] == "enhanced"
        assert rows[name]["reason"] == ""
        assert float(rows[name]["duration"]) == pytest.approx(0.3)
        assert (out / name).is_file()
    # the same audio under two names gets two different noises
    a, b = (sf.read(out / name)[0] for name in ("a.wav", "b.wav"))
    assert not np.allclose(a, b)


def test_a_files_noise_does_not_depend_on_its_batch(corpus, tmp_path):
    files = [corpus / "spk0" / f"utt{i:02d}.wav" for i in (0, 20)]
    files += [corpus / "spk1" / f"utt{i:02d}.wav" for i in (5, 25)]
    assert len({sf.info(str(f)).frames for f in files}) == 1  # one batch
    alone, together = tmp_path / "alone", tmp_path / "together"
    options = [*OPTIONS, "--steps", "2"]
    assert main([*map(str, files), "--out", str(together), *options]) == 0
    args = [str(files[2]), "--out", str(alone), *options, "--batch-size", "1"]
    assert main(args) == 0
    one = torch.from_numpy(sf.read(alone / "utt05.wav")[0])
    batched = torch.from_numpy(sf.read(together / "utt05.wav")[0])
    # the same noise: equal up to float rounding of a batched network
    assert torch.allclose(one, batched, atol=1e-4 * one.abs().max())


def test_more_processes_than_gpus_is_one_clear_error(monkeypatch):
    from speechbrain_elbo.corpus import _check_cuda_index

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _check_cuda_index("cuda:0", 0)
    _check_cuda_index("cpu", 1)
    with pytest.raises(ValueError, match="start at most 1 processes per"):
        _check_cuda_index("cuda:1", 1)
