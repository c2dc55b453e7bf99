"""The ONNX Runtime backend, thread control and mixed precision (issue 15).

One small two-stage model (a 2-level NCSN++ with 4 base channels and a
conditional refiner of the same layout, random non-zero weights) is
exported to ONNX once for the module: exporting is the slow part (tens of
seconds per network on a busy 2-core machine).
"""

import logging
import subprocess
import sys
import threading
import time

import pytest
import torch

from speechbrain_elbo import runtime
from speechbrain_elbo.export import export_enhancer
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.lobes.ncsnpp import NCSNpp
from speechbrain_elbo.lobes.refiner import Refiner
from speechbrain_elbo.metrics import si_sdr
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = dict(nf=4, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[])


def _noisy_weights(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return module


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A two-stage model folder; its ONNX cache is filled by the first load
    with the onnxruntime backend (in the folder: a plain local folder)."""
    torch.manual_seed(0)
    net = _noisy_weights(NCSNpp(**LAYOUT), 1)
    net.config = dict(LAYOUT)
    refiner = Refiner(**LAYOUT, conditional=True)
    refiner.set_levels(sample=0.05, decoder=0.02)
    _noisy_weights(refiner, 2)
    sde = OUVESDE(GeometricGNS(0.05, 0.5), gamma=1.5, t_eps=0.03)
    return export_enhancer(
        tmp_path_factory.mktemp("onnx") / "model",
        net,
        sde,
        SpectralTransform(),
        Sampler("pc", 2),
        refiner=refiner,
    )


@pytest.fixture(scope="module")
def both(model):
    """(torch enhancer, onnxruntime enhancer) of the model."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    eager = DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cpu"}, threads=1
    )
    onnx = DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cpu"}, threads=1, backend="onnxruntime"
    )
    return eager, onnx


def _relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("sampler", ["pc", "euler", "heun"])
def test_onnxruntime_matches_torch_for_every_sampler(both, sampler):
    eager, onnx = both
    noisy = torch.randn(2, 5000, generator=torch.Generator().manual_seed(3))
    for refine in (False, True):
        options = dict(sampler=sampler, steps=2, seed=[4, 5])
        options["use_refiner"] = refine
        want = eager.enhance_batch(noisy, **options)
        got = onnx.enhance_batch(noisy, **options)
        assert _relative(got, want) <= 1e-4, (sampler, refine)
        assert onnx.last_nfe == eager.last_nfe


def test_onnx_networks_replace_the_torch_ones(both, model):
    from speechbrain_elbo.onnx_backend import OnnxNetwork

    _, onnx = both
    assert isinstance(onnx.score_model.backbone, OnnxNetwork)
    assert isinstance(onnx.refiner.backbone, OnnxNetwork)
    # cached in the model folder, one file per network, keyed by weights
    files = sorted(p.name for p in (model / "onnx").glob("*/*.onnx"))
    assert files == ["refiner.onnx", "score_model.onnx"]
    options = onnx.score_model.backbone.session.get_session_options()
    assert options.intra_op_num_threads == 1


def test_onnx_network_pads_frames_like_the_network(both):
    eager, onnx = both
    x = torch.randn(2, 4, 256, 7)
    cond = torch.tensor([-1.5, -0.5])
    with torch.inference_mode():
        want = eager.score_model.backbone(x, cond)
        got = onnx.score_model.backbone(x, cond)
    assert got.shape == want.shape == (2, 2, 256, 7)
    assert _relative(got, want) <= 1e-5


def test_cached_graphs_are_reused_and_new_weights_make_new_ones(
    both, model, tmp_path, caplog
):
    before = {p: p.stat().st_mtime_ns for p in (model / "onnx").rglob("*")}
    with caplog.at_level(logging.WARNING, "speechbrain_elbo.onnx_backend"):
        DiffusionEnhancement.from_hparams(
            model, run_opts={"device": "cpu"}, backend="onnxruntime"
        )
    assert "Exporting" not in caplog.text
    after = {p: p.stat().st_mtime_ns for p in (model / "onnx").rglob("*")}
    assert after == before
    # the key follows the weights: another network is another file
    from speechbrain_elbo.onnx_backend import onnx_path

    eager, _ = both
    net = eager.score_model.backbone
    cached = onnx_path(net, "score_model", [model / "onnx"], 256)
    assert cached.is_file()
    other = _noisy_weights(NCSNpp(**LAYOUT), 9)
    other.config = dict(LAYOUT)
    fresh = onnx_path(other, "score_model", [model / "onnx"], 256)
    assert not fresh.is_file() and fresh.parent != cached.parent


def test_bundled_models_cache_in_the_user_cache(monkeypatch, tmp_path):
    from speechbrain_elbo.onnx_backend import cache_roots

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    roots = cache_roots("pkg/minivb-small", None, in_folder=False)
    assert roots == [tmp_path / "speechbrain_elbo" / "onnx"]
    roots = cache_roots("model", tmp_path / "save")
    assert roots[0] == tmp_path / "save" / "onnx"


def test_missing_onnxruntime_is_one_clear_error(monkeypatch):
    from speechbrain_elbo.onnx_backend import require_onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"speechbrain_elbo\[onnx\]"):
        require_onnxruntime()


def test_threads_option_sets_torch_threads(model):
    torch.set_num_threads(2)
    DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cpu"}, threads=1
    )
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        DiffusionEnhancement.from_hparams(model, threads=0)


def test_other_load_counts_other_processes_not_this_one():
    # a CPU-bound competitor is counted; this process's own busy threads
    # are not (the load average would count both)
    def measure():
        return runtime.other_load(samples=100, interval=0.003)

    base = measure()
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        own = measure()
    finally:
        stop.set()
        thread.join()
    competitor = subprocess.Popen(
        [sys.executable, "-c", "while True: pass"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        busy = measure()
    finally:
        competitor.kill()
        competitor.wait()
    assert busy >= base + 0.6, (base, busy)
    assert own <= base + 0.4, (base, own)


def test_default_threads_rule(monkeypatch):
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    assert runtime.default_threads(load=0.2) == 4
    assert runtime.default_threads(load=1.0) == 3
    assert runtime.default_threads(load=7.0) == 1
    # the default caps PyTorch's setting at the free cores, never raises it
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(runtime, "default_threads", lambda: 1)
        assert runtime.check_threads(None) == 1
        monkeypatch.setattr(runtime, "default_threads", lambda: 4)
        assert runtime.check_threads(None) == 2
        # OMP_NUM_THREADS is the user's choice: PyTorch's setting is kept
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(runtime, "default_threads", lambda: 1)
        assert runtime.check_threads(None) == 2
    finally:
        torch.set_num_threads(1)


def test_reduced_precision_on_a_cpu_without_bf16_is_a_clear_error(
    model, monkeypatch
):
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="no bf16 instructions"):
        DiffusionEnhancement.from_hparams(
            model, run_opts={"device": "cpu"}, precision="bf16"
        )
    with pytest.raises(ValueError, match="GPU only"):
        DiffusionEnhancement.from_hparams(
            model, run_opts={"device": "cpu"}, precision="fp16"
        )
    with pytest.raises(ValueError, match="applies to the torch backend"):
        runtime.check_precision("bf16", "cuda", "onnxruntime")


def test_bf16_runs_the_networks_only_in_bf16(model, monkeypatch):
    """Where bf16 is allowed, the networks run under autocast and the
    output stays close to fp32 (and float32)."""
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    eager = DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cpu"}, threads=1
    )
    half = DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cpu"}, threads=1, precision="bf16"
    )
    assert isinstance(half.score_model.backbone, runtime.AutocastNetwork)
    assert isinstance(half.refiner.backbone, runtime.AutocastNetwork)
    noisy = torch.randn(5000, generator=torch.Generator().manual_seed(6))
    want = eager.enhance_batch(noisy, sampler="euler", steps=2, seed=0)
    got = half.enhance_batch(noisy, sampler="euler", steps=2, seed=0)
    assert got.dtype == torch.float32
    assert not torch.equal(got, want)  # bf16 did run
    assert float(si_sdr(got, want)) > 20.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_execution_provider_when_present(model):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has no CUDA execution provider")
    eager = DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cuda:0"}
    )
    onnx = DiffusionEnhancement.from_hparams(
        model, run_opts={"device": "cuda:0"}, backend="onnxruntime"
    )
    assert onnx.score_model.backbone.on_cuda
    noisy = torch.randn(2, 5000, device="cuda:0")
    want = eager.enhance_batch(noisy, sampler="euler", steps=2, seed=0)
    got = onnx.enhance_batch(noisy, sampler="euler", steps=2, seed=0)
    assert got.device == noisy.device
    assert _relative(got, want) <= 1e-3


def test_command_line_backend_threads_precision(both, model, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from speechbrain_elbo.cli import main

    wav = tmp_path / "noisy.wav"
    noise = np.random.default_rng(0).standard_normal(6000)
    sf.write(wav, (0.1 * noise).astype("float32"), 16000)
    common = [str(wav), "--model", str(model), "--steps", "2", "--quiet"]
    common.append("--no-output-check")  # random weights: loud outputs
    outs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        args = [*common, "--out", str(out), "--backend", backend]
        assert main([*args, "--threads", "1"]) == 0
        outs[backend] = torch.from_numpy(sf.read(out / "noisy.wav")[0])
    assert _relative(outs["onnxruntime"], outs["torch"]) <= 1e-4
    args = [*common, "--out", str(tmp_path / "bf16"), "--precision", "fp16"]
    assert main(args) == 1
    assert "GPU only" in capsys.readouterr().err
