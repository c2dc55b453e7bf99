"""Training killed anywhere (SIGKILL) and started again ends as if never killed.

A tiny VoiceBank-DEMAND stage 1 (3 training files, batch 1, 2 epochs: 6
optimiser steps, an intra-epoch checkpoint every 2 steps) runs in
subprocesses that kill themselves with SIGKILL at chosen moments, through a
wrapper script written here (the package carries no test hook): the wrapper
patches ``EnhancementBrain.fit_batch`` (mid-epoch) or ``torch.save`` (half a
file written, then the kill) before running the recipe script. The run,
started again after each kill (and once after the newest checkpoint was
truncated), must end with the optimiser steps, the EMA weights (the
exported file, byte for byte) and the test results of an uninterrupted run,
and its export must load. The stage-1 cache (``--cache_only``, the
driver's cache step) is killed while writing a file and resumed: the cache
must equal an uninterrupted one. Checkpoint, cache and export files are read
weights-only: a pickled object in them is refused, never run.
"""

import csv
import hashlib
import importlib.util
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch

from speechbrain_elbo.cache import Stage1Cache
from speechbrain_elbo.checkpoints import BROKEN_PREFIX, SafeCheckpointer
from speechbrain_elbo.export import ModelFolderError, read_state_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "VoiceBank-DEMAND"
HPARAMS = RECIPE / "hparams"
COMMON = ["--device=cpu", "--noprogressbar", "--num_workers=0"]

#: The wrapper: KILL_AT=fit_batch:N kills the process when its N-th training
#: batch starts; KILL_AT=save:N:REGEX kills it in the N-th torch.save to a
#: path matching REGEX, after writing the first half of the file.
KILLER = """
import io, os, re, runpy, signal, sys

import torch


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


kind, _, rest = os.environ.get("KILL_AT", "").partition(":")
calls = [0]
if kind == "fit_batch":
    from speechbrain_elbo.brains.base import EnhancementBrain

    fit_batch = EnhancementBrain.fit_batch

    def killing_fit_batch(self, batch):
        calls[0] += 1
        if calls[0] == int(rest):
            die()
        return fit_batch(self, batch)

    EnhancementBrain.fit_batch = killing_fit_batch
elif kind == "save":
    count, _, pattern = rest.partition(":")
    save = torch.save

    def killing_save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and re.search(pattern, str(f)):
            calls[0] += 1
            if calls[0] == int(count):
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                data = buffer.getvalue()
                with open(f, "wb") as handle:
                    handle.write(data[: len(data) // 2])
                die()
        return save(obj, f, *args, **kwargs)

    torch.save = killing_save
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def voicebank_tests():
    """tests/test_recipe_voicebank.py as a module: its fake corpus and its
    loader of the recipe's scripts."""
    spec = importlib.util.spec_from_file_location(
        "vb_corpus", ROOT / "tests" / "test_recipe_voicebank.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_script(name):
    return voicebank_tests().load_script(name)


def make_corpus(root):
    # p226 is held out for validation: 3 training and 3 validation files
    return voicebank_tests().make_fake_voicebank(
        root, speakers=("p226", "p227"), per_speaker=3, test_files=1
    )


def score_args(data, out):
    return [
        str(HPARAMS / "score.yaml"),
        f"--data_folder={data}",
        f"--output_folder={out}",
        "--overrides_file",
        str(HPARAMS / "overrides" / "tiny_score.yaml"),
        "--sampler_steps=2",
        "--valid_enhance_utterances=0",
        "--batch_size=1",
        "--ckpt_interval_steps=2",
        *COMMON,
    ]


def run(tmp, script, args, kill_at=None):
    """Run a recipe script in a subprocess; returns (return code, output)."""
    killer = tmp / "killer.py"
    killer.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": kill_at or ""}
    result = subprocess.run(
        [sys.executable, str(killer), str(RECIPE / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stdout + result.stderr


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def committed(out):
    return sorted((out / "save").glob("CKPT+*/CKPT.yaml"))


def epoch_lines(out):
    log = (out / "train_log.txt").read_text()
    return [line for line in log.splitlines() if line.startswith("epoch:")]


def optimizer_steps(out):
    newest = committed(out)[-1].parent / "brain.ckpt"
    for line in newest.read_text().splitlines():
        if line.startswith("optimizer_step:"):
            return int(line.split(":")[1])
    raise AssertionError(f"no optimizer_step in {newest}")


def rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted run, and the same run killed three times (its
    newest checkpoint truncated once) and started again until it ends."""
    root = tmp_path_factory.mktemp("kill")
    data = make_corpus(root / "data")
    reference = root / "reference"
    code, output = run(root, "train_score.py", score_args(data, reference))
    assert code == 0, output[-3000:]
    out = root / "killed"
    args = score_args(data, out)
    logs = {}
    killed = -signal.SIGKILL
    # 1. during a checkpoint save: the end-of-epoch-1 one, half of its EMA
    # file written (the intra-epoch one after step 2 is complete)
    code, logs["save"] = run(root, "train_score.py", args, "save:2:/ema.ckpt$")
    assert code == killed, logs["save"][-3000:]
    folders = (out / "save").glob("CKPT+*")
    unfinished = [p for p in folders if not (p / "CKPT.yaml").exists()]
    assert len(unfinished) == 1 and len(committed(out)) == 1
    # 2. mid-epoch: when step 6 starts (resumed after step 2: calls 3 4 5 6)
    code, logs["mid_epoch"] = run(root, "train_score.py", args, "fit_batch:4")
    assert code == killed, logs["mid_epoch"][-3000:]
    # 3. the newest checkpoint (intra-epoch, after step 5) gets truncated;
    # then a kill during the export, half of the weights file written
    newest = committed(out)[-1].parent
    assert "end-of-epoch: false" in (newest / "CKPT.yaml").read_text()
    optimizer = newest / "optimizer.ckpt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    code, logs["export"] = run(
        root, "train_score.py", args, r"save:1:/\.model\.[a-z0-9_]{8}/"
    )
    assert code == killed, logs["export"][-3000:]
    leftovers = list(out.glob(".model.*"))
    assert leftovers and not (out / "model").exists()
    # 4. started again, nothing killed: it finishes
    code, logs["final"] = run(root, "train_score.py", args)
    assert code == 0, logs["final"][-3000:]
    return root, data, reference, out, newest, logs


def test_killed_run_ends_as_the_uninterrupted_one(runs):
    _, _, reference, out, _, _ = runs
    # 3 training files, batch 1, 2 epochs
    assert optimizer_steps(reference) == optimizer_steps(out) == 6
    # epoch 1 is logged twice: before the save killed in it, and after the
    # steps redone; with the same numbers
    assert sorted(set(epoch_lines(out))) == epoch_lines(reference)
    assert len(epoch_lines(out)) == 3
    # epoch 1 resumed after step 2 still counts its 3 batches
    assert all("train batches: [3]" in line for line in epoch_lines(out))
    # the same EMA weights, byte for byte, and the same test scores
    exported = "model/score_model.ckpt"
    assert sha256(out / exported) == sha256(reference / exported)
    scores = ("system", "pesq", "estoi", "si_sdr", "nfe")  # rtf: timing

    def results(run):
        return [
            [row[key] for key in scores]
            for row in rows(run / "test_results.csv")
        ]

    assert results(out) == results(reference)


def test_no_unfinished_or_corrupt_checkpoint_is_loaded(runs):
    _, _, _, out, newest, logs = runs
    # the killed save was never listed; the next start deleted it
    assert "a checkpoint save that never finished" in logs["mid_epoch"]
    assert "Loading a checkpoint" in logs["mid_epoch"]
    # the truncated checkpoint: one warning, moved aside, the previous one
    # (end of epoch 1) loaded instead
    warning = [
        line
        for line in logs["export"].splitlines()
        if f"Checkpoint {newest.name} cannot be loaded" in line
    ]
    assert len(warning) == 1 and "trying the previous one" in warning[0]
    assert (out / "save" / (BROKEN_PREFIX + newest.name)).is_dir()
    assert not newest.exists()
    # the export killed half-way left a hidden folder, deleted by the next
    assert not list(out.glob(".model.*"))


def test_exported_model_loads_and_enhances(runs):
    from speechbrain_elbo.inference import DiffusionEnhancement

    _, _, _, out, _, _ = runs
    enhancer = DiffusionEnhancement.from_hparams(source=str(out / "model"))
    noisy = 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(0))
    enhanced = enhancer.enhance_batch(noisy[None], seed=0)
    assert enhanced.shape[-1] == 4000 and torch.isfinite(enhanced).all()


def test_killed_cache_generation_resumes_to_the_same_cache(runs):
    root, data, reference, _, _, _ = runs

    def args(out):
        return [
            str(HPARAMS / "refiner.yaml"),
            f"--data_folder={data}",
            f"--output_folder={out}",
            f"--stage1_folder={reference / 'model'}",
            "--overrides_file",
            str(HPARAMS / "overrides" / "tiny_refiner.yaml"),
            "--cache_batch_size=2",
            "--cache_only=True",
            *COMMON,
        ]

    killed = root / "cache_killed"
    # killed while writing the second estimate of the first batch
    code, output = run(
        root, "train_refiner.py", args(killed), r"save:2:/stage1_cache/"
    )
    assert code == -signal.SIGKILL, output[-3000:]
    cache = killed / "stage1_cache"
    assert len(list(cache.glob("train/[!.]*.pt"))) == 1
    assert len(list(cache.glob("train/.*.pt"))) == 1  # the half-written one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        script = load_script("train_refiner")
        assert script.main(args(killed)) is None  # started again: finishes
        script.main(args(root / "cache_whole"))  # never interrupted
    finally:
        torch.set_num_threads(threads)
    whole = root / "cache_whole" / "stage1_cache"
    assert not list(cache.glob("*/.*"))
    names = sorted(p.relative_to(whole) for p in whole.glob("*/*.pt"))
    assert len(names) == 6  # 3 training and 3 validation files
    assert names == sorted(p.relative_to(cache) for p in cache.glob("*/*.pt"))
    for name in names:
        assert torch.equal(
            torch.load(cache / name, weights_only=True),
            torch.load(whole / name, weights_only=True),
        ), name


class Payload:
    """Pickled, it would create a file when unpickled without weights_only."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_checkpoints_are_read_weights_only(tmp_path):
    ran = tmp_path / "code_ran"
    # the training checkpoints: the newest holds code, the previous loads
    net = torch.nn.Linear(2, 2)
    checkpointer = SafeCheckpointer(tmp_path / "save", {"net": net})
    checkpointer.save_checkpoint(meta={"n": 1})
    newest = checkpointer.save_checkpoint(meta={"n": 2})
    torch.save({"weight": Payload(ran)}, newest.paramfiles["net"])
    assert checkpointer.recover_if_possible().meta["n"] == 1
    # the cache and the exported folders
    cache = Stage1Cache(tmp_path / "cache")
    cache.path("train", "u", 0).parent.mkdir(parents=True)
    torch.save(Payload(ran), cache.path("train", "u", 0))
    with pytest.raises(Exception, match="[Ww]eights"):
        cache.load("train", "u", 0)
    torch.save({"w": Payload(ran)}, tmp_path / "score_model.ckpt")
    with pytest.raises(ModelFolderError, match="corrupt"):
        read_state_dict(tmp_path / "score_model.ckpt")
    assert not ran.exists()


def test_recovery_raises_when_no_checkpoint_loads(tmp_path):
    # e.g. a network changed since its checkpoints were saved: an error,
    # nothing moved aside, no silent start from scratch
    checkpointer = SafeCheckpointer(tmp_path, {"net": torch.nn.Linear(2, 2)})
    checkpointer.save_checkpoint()
    other = SafeCheckpointer(tmp_path, {"net": torch.nn.Linear(3, 2)})
    with pytest.raises(RuntimeError, match="None of the 1 checkpoints"):
        other.recover_if_possible()
    assert len(list(tmp_path.glob("CKPT+*"))) == 1
    # an unreadable CKPT.yaml is skipped with a warning, the rest still load
    meta = checkpointer.save_checkpoint(meta={"n": 3}).path / "CKPT.yaml"
    meta.write_text("end-of-epoch: [")
    assert checkpointer.recover_if_possible() is not None
    assert len(checkpointer.list_checkpoints()) == 1
