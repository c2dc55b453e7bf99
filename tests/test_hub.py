"""``from_hparams(source="org/name")``: a model from the Hugging Face Hub.

Nothing is downloaded. A real Hugging Face cache is written in a temporary
folder with the documented layout (``models--org--name/{refs, snapshots,
blobs}``, snapshot files linked to blobs named by their SHA-256), holding
the bundled model ``minivb-small``; the hub loads then run in a child
process started with ``HF_HUB_CACHE`` pointing at it and
``HF_HUB_OFFLINE=1`` (``huggingface_hub`` reads both at import time), so
the fetching under test is SpeechBrain's ``fetch`` and
``huggingface_hub.hf_hub_download`` themselves, in the library's own
offline mode. ``HF_ENDPOINT`` points at a closed local port as well: a
request that escaped offline mode would fail, not reach the network.

The child runs every scenario once and writes what it saw to a JSON file
(and the enhanced waveform to a tensor file); each test checks one part.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from speechbrain_elbo.hub import hub_files, is_hub_id, resolve_source
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.pretrained import pretrained_path

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNDLED = pretrained_path("minivb-small")
FILES = ("hyperparams.yaml", "score_model.ckpt", "refiner.ckpt")
MAIN_COMMIT = "0123456789abcdef0123456789abcdef01234567"
V1_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
STEPS, SEED, SR = 2, 0, 16000


def waveform():
    """Half a second of a noisy tone, the same every time."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(SR // 2) / SR
    tone = 0.3 * torch.sin(2 * torch.pi * 220.0 * t)
    return tone + 0.05 * torch.randn(t.shape, generator=generator)


def add_snapshot(cache, repo_id, commit, files, refs=("main",)):
    """One commit of a model repository, in the Hugging Face cache layout.

    ``files`` maps a file name to its bytes; each is stored once as
    ``blobs/<sha256>`` and linked from ``snapshots/<commit>/<name>``, and
    each ref names the commit.
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)


def bundled_files():
    return {name: (BUNDLED / name).read_bytes() for name in FILES}


CHILD = r"""
import contextlib, io, json, pathlib, sys
import torch
from speechbrain.utils.fetching import LocalStrategy
from speechbrain_elbo.cli import main
from speechbrain_elbo.inference import DiffusionEnhancement

work = pathlib.Path(sys.argv[1])
steps, seed, v1_commit = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seen = {}

def attempt(key, **kwargs):
    try:
        enhancer = DiffusionEnhancement.from_hparams(
            run_opts={"device": "cpu"}, **kwargs)
    except Exception as error:
        seen[key] = {"error": type(error).__name__, "message": str(error)}
        return None
    seen[key] = {
        "steps": enhancer.default_sampler.steps,
        "pretrained_path": enhancer.hparams.pretrained_path,
    }
    return enhancer

enhancer = attempt("main", source="org/name", savedir=str(work / "savedir"))
if enhancer is not None:
    noisy = torch.load(work / "noisy.pt")
    torch.save(enhancer.enhance_batch(noisy, steps=steps, seed=seed),
               work / "hub_enhanced.pt")
    seen["savedir"] = {
        p.name: str(p.resolve()) for p in (work / "savedir").iterdir()
    }
attempt("cache_only", source="org/name")
copies = work / "savedir_copy"
attempt("copy", source="org/name", savedir=str(copies),
        local_strategy=LocalStrategy.COPY)
seen["copies"] = sorted(p.name for p in copies.iterdir() if p.is_symlink())
attempt("v1", source="org/name", revision="v1")
attempt("v1_commit", source="org/name", revision=v1_commit)
attempt("unknown_id", source="org/unknown")
attempt("unknown_revision", source="org/name", revision="v9")
attempt("incomplete", source="org/incomplete")
attempt("corrupt", source="org/corrupt")
attempt("corrupt_unchecked", source="org/corrupt", verify_checksums=False)
for key, model in (("cli_hub", "org/name"), ("cli_unknown", "org/unknown")):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(["--model", model, str(work / "noisy.wav"),
                       "--out", str(work / key), "--steps", str(steps),
                       "--seed", str(seed), "--quiet"])
    seen[key] = {"status": status, "stderr": stderr.getvalue()}
(work / "seen.json").write_text(json.dumps(seen, indent=1))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The offline cache, the child's observations and its work folder."""
    work = tmp_path_factory.mktemp("hub")
    cache = work / "hf_cache"
    files = bundled_files()
    add_snapshot(cache, "org/name", MAIN_COMMIT, files)
    # tag v1: the same weights, a different default sampler
    text = files["hyperparams.yaml"].decode()
    assert text.count("    steps: 4\n") == 1
    v1_text = text.replace("steps: 4", "steps: 3").encode()
    v1 = {**files, "hyperparams.yaml": v1_text}
    add_snapshot(cache, "org/name", V1_COMMIT, v1, refs=("v1",))
    # an incomplete upload: hyperparams.yaml without the checkpoints
    add_snapshot(
        cache,
        "org/incomplete",
        MAIN_COMMIT,
        {"hyperparams.yaml": files["hyperparams.yaml"]},
    )
    # one changed byte in a checkpoint: a corrupt download
    score = bytearray(files["score_model.ckpt"])
    score[-1] ^= 1
    add_snapshot(
        cache,
        "org/corrupt",
        MAIN_COMMIT,
        {**files, "score_model.ckpt": bytes(score)},
    )
    noisy = waveform()
    torch.save(noisy, work / "noisy.pt")
    sf.write(work / "noisy.wav", noisy.numpy(), SR, subtype="FLOAT")
    env = {
        **os.environ,
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("HF_TOKEN", None)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(work),
            str(STEPS),
            str(SEED),
            V1_COMMIT,
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    seen = json.loads((work / "seen.json").read_text())
    return seen, work, cache


def test_hub_model_enhances_exactly_like_the_local_folder(hub):
    seen, work, _ = hub
    assert "error" not in seen["main"], seen["main"]
    local = DiffusionEnhancement.from_hparams(
        source=BUNDLED, run_opts={"device": "cpu"}
    )
    expected = local.enhance_batch(waveform(), steps=STEPS, seed=SEED)
    enhanced = torch.load(work / "hub_enhanced.pt")
    assert enhanced.shape == expected.shape == (SR // 2,)
    assert torch.equal(enhanced, expected)
    # not a trivially equal output: the model changed the waveform
    assert not torch.equal(enhanced, waveform())


def test_hub_files_are_fetched_into_savedir_from_the_cache(hub):
    seen, work, cache = hub
    snapshot = cache / "models--org--name" / "snapshots" / MAIN_COMMIT
    assert sorted(seen["savedir"]) == sorted(FILES)
    for name, target in seen["savedir"].items():
        # symlinked (SpeechBrain's default strategy) to the cache's blobs
        assert target == str((snapshot / name).resolve())
        assert pathlib.Path(target).parent.name == "blobs"
    # load_folder loaded the savedir, pretrained_path points there
    assert seen["main"]["pretrained_path"] == str(work / "savedir")
    # without savedir the files are read in the cache's snapshot folder
    assert seen["cache_only"]["pretrained_path"] == str(snapshot)
    # LocalStrategy.COPY: regular files, no links, and it loads
    assert seen["copy"]["pretrained_path"] == str(work / "savedir_copy")
    assert seen["copies"] == []


def test_revision_selects_the_snapshot(hub):
    seen, _, _ = hub
    assert seen["main"]["steps"] == 4
    assert seen["v1"]["steps"] == 3
    assert seen["v1_commit"]["steps"] == 3


def test_unknown_id_offline_is_one_clear_error(hub):
    seen, _, cache = hub
    error = seen["unknown_id"]
    assert error["error"] == "ModelFolderError"
    message = error["message"]
    assert "\n" not in message
    assert message.startswith("Hub model org/unknown: its hyperparams.yaml")
    assert "HF_HUB_OFFLINE=1" in message and str(cache) in message
    assert "revision v9" in seen["unknown_revision"]["message"]


def test_missing_and_corrupt_hub_files_are_named(hub):
    seen, _, _ = hub
    incomplete = seen["incomplete"]
    assert incomplete["error"] == "ModelFolderError"
    message = incomplete["message"]
    assert "score_model.ckpt (named in its hyperparams.yaml)" in message
    assert "upload the whole exported folder" in message
    # the checksums are verified after the fetch, by load_folder
    corrupt = seen["corrupt"]
    assert corrupt["error"] == "ModelFolderError"
    assert "score_model.ckpt is corrupt: its SHA-256" in corrupt["message"]
    assert seen["corrupt_unchecked"]["steps"] == 4


def test_command_line_takes_a_hub_id(hub):
    seen, work, _ = hub
    assert seen["cli_hub"]["status"] == 0, seen["cli_hub"]["stderr"]
    enhanced, rate = sf.read(work / "cli_hub" / "noisy.wav", dtype="float32")
    assert rate == SR and enhanced.shape == (SR // 2,)
    unknown = seen["cli_unknown"]
    assert unknown["status"] == 1
    lines = unknown["stderr"].strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "speechbrain-elbo-enhance: error: Hub model org/unknown"
    )


def test_source_kinds_are_decided_once(tmp_path, monkeypatch):
    assert resolve_source("minivb-small").kind == "bundled"
    assert resolve_source(str(BUNDLED)).kind == "folder"
    # a local folder named like a hub id is a folder, not a hub id
    local = tmp_path / "org" / "name"
    shutil.copytree(BUNDLED, local, ignore=shutil.ignore_patterns("*.txt"))
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("org/name")
    assert resolve_source("org/name").kind == "folder"
    with pytest.raises(ValueError, match="revision='v1' applies to"):
        resolve_source("minivb-small", revision="v1")
    with pytest.raises(FileNotFoundError, match="nor a Hugging Face Hub id"):
        resolve_source("a/b/c")
    assert hub_files(BUNDLED / "hyperparams.yaml") == [
        "score_model.ckpt",
        "refiner.ckpt",
    ]


def test_no_network_error_names_the_endpoint_and_the_cache(monkeypatch):
    # What hf_hub_download raises when the Hub cannot be reached and the
    # file is not cached (not reproduced for real here: without offline
    # mode, huggingface_hub retries a refused connection for ~25 s a file).
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    from speechbrain_elbo.hub import _hub_error

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    error = LocalEntryNotFoundError("cannot find the requested files")
    message = str(
        _hub_error(error, "org/name", "v1", "hyperparams.yaml", FILES[0])
    )
    assert message.startswith(
        "Hub model org/name (revision v1): its hyperparams.yaml could not "
        f"be downloaded (no connection to {constants.ENDPOINT})"
    )
    assert constants.HF_HUB_CACHE in message and "\n" not in message
