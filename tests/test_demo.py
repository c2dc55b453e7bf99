"""The demo: report, figures, enhanced files, data preparation, errors."""

import functools
import http.server
import json
import math
import pathlib
import re
import shutil
import threading

import pytest
import soundfile as sf
import torch

from speechbrain_elbo import demo
from speechbrain_elbo.demo import figures, run
from speechbrain_elbo.demo.data import read_mono
from speechbrain_elbo.demo.run import ElboOptions, IocOptions
from speechbrain_elbo.export import export_enhancer
from speechbrain_elbo.inference import DiffusionEnhancement
from speechbrain_elbo.lobes.ncsnpp import NCSNpp
from speechbrain_elbo.lobes.refiner import Refiner
from speechbrain_elbo.metrics import si_sdr
from speechbrain_elbo.minidata import DEFAULT_SAMPLES
from speechbrain_elbo.pretrained import (
    PretrainedModelError,
    available,
    load_pretrained,
    pretrained_path,
)
from speechbrain_elbo.sampling import Sampler
from speechbrain_elbo.sde import OUVESDE, GeometricGNS
from speechbrain_elbo.spectral import SpectralTransform

PNG = b"\x89PNG\r\n\x1a\n"
TINY = dict(nf=4, ch_mult=[1, 2, 2, 2], num_res_blocks=1, attn_resolutions=[])
SCORE_LOG = (
    "epoch: 1, lr: 1.00e-04 - train loss: 1.02, train batches: [16] - "
    "valid loss: 9.98e-01, valid count: 2, valid pesq: 1.03\n"
    "epoch: 2, lr: 1.00e-04 - train loss: 9.37e-01, train batches: [16] - "
    "valid loss: 9.32e-01, valid count: 2, valid pesq: 1.05\n"
    "test: noisy - test utterances: 10, test pesq: 1.02\n"
)
#: Debian's chromium, headless, offline (tools/install_browser.sh installs it)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
REFINER_LOG = (
    "epoch: 1, lr: 1.00e-04 - train loss: 3.51, train batches: [8, 8] - "
    "valid loss: 3.52, valid pesq: 1.04, valid stage1_pesq: 1.04\n"
)


def _tiny_model(folder, refiner=True, logs=True):
    torch.manual_seed(0)
    net = NCSNpp(**TINY)
    net.config = dict(TINY)
    ref = None
    if refiner:
        ref = Refiner(**TINY)
        ref.config = dict(TINY)
        # a refiner that changes its input, so that stage 1+2 != stage 1
        with torch.no_grad():
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
    folder = export_enhancer(
        folder,
        net,
        OUVESDE(GeometricGNS()),
        SpectralTransform(),
        Sampler("pc", 2, corrector_steps=0),
        refiner=ref,
        model_card={"data": "none (random weights, test)"},
    )
    if logs:
        (folder / "train_log_score.txt").write_text(SCORE_LOG)
        (folder / "train_log_refiner.txt").write_text(REFINER_LOG)
    return folder


@pytest.fixture
def one_thread():
    """One torch thread: much faster than two on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def demo_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    out = root / "results" / "demo"
    result = demo.run_demo(
        model_dir=tiny_model,
        data_dir=root / "data",
        out_dir=out,
        steps=1,
        max_items=2,
        elbo=ElboOptions(
            items=1,
            fit_items=1,
            diffusion_samples=2,
            reconstruction_samples=1,
            crop_frames=64,
        ),
        ioc=IocOptions(items=1, times=3, probes=1, crop_frames=32),
        threads=1,
        samples_dir=DEFAULT_SAMPLES,
        progress=False,
    )
    return result, out, root


def _numbers(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def test_report_json(demo_run):
    result, out, _ = demo_run
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(json.dumps(result))
    assert set(data["systems"]) == {"noisy", "stage1", "stage1+2"}
    for name, stats in data["systems"].items():
        for key in ("pesq", "estoi", "si_sdr", "nfe", "rtf", "count"):
            assert key in stats, (name, key)
        assert stats["count"] == 2
    assert data["systems"]["noisy"]["nfe"] == 0
    # PC with 1 step and no corrector: 1 evaluation; the refiner adds one
    assert data["systems"]["stage1"]["nfe"] == 1
    assert data["systems"]["stage1+2"]["nfe"] == 2
    assert data["systems"]["stage1"]["rtf"] > 0
    assert (
        data["systems"]["stage1+2"]["rtf"] >= data["systems"]["stage1"]["rtf"]
    )
    for path, value in _numbers(data):
        assert math.isfinite(value), path
    elbo = data["elbo"]
    for name in ("stage1", "stage1+2"):
        terms = elbo[name]
        assert terms["total"] == pytest.approx(
            terms["prior"] + terms["diffusion"] + terms["reconstruction"]
        )
    # the same draws for both decoders: only the reconstruction differs
    assert elbo["stage1"]["prior"] == elbo["stage1+2"]["prior"]
    assert elbo["stage1"]["diffusion"] == elbo["stage1+2"]["diffusion"]
    assert (
        elbo["stage1"]["reconstruction"] != elbo["stage1+2"]["reconstruction"]
    )
    assert "validation" in elbo["decoder_variance"]["source"]
    ioc = data["ioc"]
    assert len(ioc["t"]) == len(ioc["sigma"]) == len(ioc["ioc"]) == 3
    assert ioc["t"][0] == pytest.approx(0.03)
    assert ioc["t"][-1] == pytest.approx(1.0)
    assert ioc["sigma"] == sorted(ioc["sigma"])
    # the untrained backbone outputs ~0 (zero-initialised last layers), so
    # x0_hat = (x_t - (1 - a) y) / a and IoC = (1 - a)^2 / ((1 - a)^2 + 1)
    for t, value in zip(ioc["t"], ioc["ioc"], strict=True):
        a = math.exp(-1.5 * t)
        assert value == pytest.approx(
            (1 - a) ** 2 / ((1 - a) ** 2 + 1), abs=1e-3
        )
    assert data["training"]["score"]["epochs"] == 2
    assert data["training"]["refiner"]["last"]["train batches"] == [8.0, 8.0]
    assert data["data"]["items"] == 2
    assert data["settings"]["sampler"]["steps"] == 1
    assert data["model"]["stages"] == 2
    assert data["model"]["card"] == {"data": "none (random weights, test)"}
    # no path of this machine: the copy of the model and plain names
    assert data["model"]["dir"] == "model" and data["data"]["dir"] == "data"
    assert data["data"]["origin"] == DEFAULT_SAMPLES.name


def test_per_item_scores_match_files(demo_run):
    result, out, root = demo_run
    items = demo.load_test_items(root / "data", 2)
    assert [i["id"] for i in result["per_item"]] == [i["id"] for i in items]
    for record, item in zip(result["per_item"], items, strict=True):
        clean, rate = sf.read(item["clean"], dtype="float32")
        for name in ("stage1", "stage1+2"):
            path = out / "enhanced" / name / f"{item['id']}.wav"
            wav, wav_rate = sf.read(path, dtype="float32")
            assert wav_rate == rate == 16000
            assert wav.shape == clean.shape  # the input's length
            expected = si_sdr(torch.from_numpy(wav), torch.from_numpy(clean))
            assert record[name]["si_sdr"] == pytest.approx(
                float(expected[0]), abs=1e-3
            )
    mean = sum(r["stage1"]["si_sdr"] for r in result["per_item"]) / 2
    assert result["systems"]["stage1"]["si_sdr"] == pytest.approx(mean)


def test_report_markdown_figures_and_model(demo_run, tiny_model):
    _, out, root = demo_run
    text = (out / "report.md").read_text()
    assert "| system | items | PESQ-WB | ESTOI | SI-SDR (dB) | NFE | RTF |" in (
        text
    )
    assert "| stage 1+2 (diffusion + refiner) | 2 |" in text
    assert "## ELBO terms (bits per real dimension" in text
    assert "## Importance of Condition" in text
    for name in ("spectrograms", "ioc", "training"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG, name
        assert f"![{name}](figures/{name}.png)" in text
    assert sorted(p.name for p in (out / "model").iterdir()) == sorted(
        p.name for p in tiny_model.iterdir()
    )
    DiffusionEnhancement.from_hparams(source=str(out / "model"))
    assert not list(out.parent.glob(".demo.*"))  # no temporary folder left
    header = text.split("## Enhancement")[0]
    assert "- **Model**: `tiny`, 2 stage(s) (score network" in header
    assert "full model card: [model/model_card.md](model/model_card.md)" in (
        header
    )
    assert (out / "model" / "model_card.md").is_file()
    assert "- **Training data**: none (random weights, test)" in header
    assert "- **Sampler**: pc, 1 steps, 0 corrector step(s); seed 0" in header
    assert "- **Training logs**: score 2 epoch(s), refiner 1 epoch(s)" in header
    assert "- **Hardware of this run**: cpu, 1 torch thread(s)" in header
    assert "{" not in header  # no dict dumped
    for name in ("report.md", "report.json", "report.html"):
        assert str(root) not in (out / name).read_text(), name


def test_listening_items_and_html_page(demo_run):
    result, out, root = demo_run
    listening = result["listening"]
    assert (listening["metric"], listening["system"]) == ("pesq", "stage1+2")
    entries = listening["items"]
    ranks = [rank for entry in entries for rank in entry["ranks"]]
    assert sorted(ranks) == ["best", "median", "worst"]
    records = {r["id"]: r for r in result["per_item"]}
    gains = [
        records[e["id"]]["stage1+2"]["pesq"] - records[e["id"]]["noisy"]["pesq"]
        for e in entries
    ]
    assert [e["gain"] for e in entries] == pytest.approx(gains)
    assert gains == sorted(gains, reverse=True)  # best first
    items = {i["id"]: i for i in demo.load_test_items(root / "data", 2)}
    for entry in entries:
        assert set(entry["audio"]) == {"noisy", "stage1", "stage1+2", "clean"}
        for name, path in entry["audio"].items():
            wav, rate = sf.read(out / path, dtype="float32")
            if name in ("noisy", "clean"):  # the input files, unchanged
                source, _ = sf.read(items[entry["id"]][name], dtype="float32")
                assert wav == pytest.approx(source, abs=1e-4)
        assert (out / entry["spectrogram"]).read_bytes()[:8] == PNG
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "http" not in page  # no JS, no network
    assert page.count("<audio ") == 4 * len(entries)
    # every relative link of the page is a file of the demo folder
    for link in re.findall(r'(?:src|href)="([^"]+)"', page):
        if not link.startswith(("data:", "#")):
            assert (out / link).is_file(), link
    assert str(root) not in page
    # the numbers are the markdown report's: each row of its tables
    rows = [
        line.strip("| ").split(" | ")
        for line in (out / "report.md").read_text().splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert len(rows) > 10
    for cells in rows:
        tag = "th" if cells[0] in ("system", "decoder", "t", "id") else "td"
        assert "".join(f"<{tag}>{c}</{tag}>" for c in cells) in page, cells


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(folder):
    """A static file server of ``folder`` on 127.0.0.1 (a daemon thread)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _browse(browser, url):
    """Load ``url``; what the page loaded, and what failed."""
    page = browser.new_page()
    problems = []
    page.on(
        "console",
        lambda m: m.type == "error" and problems.append(f"console: {m.text}"),
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on(
        "response",
        lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"),
    )

    def failed(request):
        # a player that has its metadata stops its download (range-less
        # servers): net::ERR_ABORTED on a media request is not a failure
        if (request.resource_type, request.failure) != (
            "media",
            "net::ERR_ABORTED",
        ):
            problems.append(f"failed: {request.url} {request.failure}")

    page.on("requestfailed", failed)
    page.goto(url, wait_until="load")
    page.wait_for_function(
        "[...document.querySelectorAll('audio')]"
        ".every(a => a.readyState >= 1 || a.error)",
        timeout=20000,
    )
    state = page.evaluate(
        """() => ({
        images: [...document.images].map(i => [i.getAttribute('src'),
                                               i.naturalWidth]),
        audio: [...document.querySelectorAll('audio')].map(
            a => [a.getAttribute('src'), a.readyState, a.error ? a.error.code
                  : null, a.duration]),
        tables: [...document.querySelectorAll('section[id] table')].map(
            t => [t.closest('section[id]').id, t.tBodies[0].rows.length]),
        players: [...document.querySelectorAll('section.item')].map(
            s => s.querySelectorAll('audio').length),
    })"""
    )
    state["problems"] = problems
    return page, state


def test_html_report_in_chromium(demo_run, tmp_path):
    """report.html in headless Chromium: players, images, tables, no error."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (pip install playwright)",
    )
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not pathlib.Path(chromium).is_file():
        pytest.skip("Debian's chromium is absent (tools/install_browser.sh)")
    result, out, _ = demo_run
    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("model"))
    missing_wav = result["listening"]["items"][0]["audio"]["stage1"]
    (broken / missing_wav).unlink()
    (broken / "figures" / "ioc.png").unlink()
    servers = [_serve(out), _serve(broken)]
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=CHROMIUM_ARGS
            )
            try:
                url = f"http://127.0.0.1:{servers[0].server_port}/report.html"
                page, state = _browse(browser, url)
                # working audio: a (muted) player plays
                played = page.evaluate(
                    """async () => {
                    const a = document.querySelector('audio');
                    a.muted = true; await a.play();
                    await new Promise(r => setTimeout(r, 300));
                    a.pause(); return a.currentTime; }"""
                )
                url = f"http://127.0.0.1:{servers[1].server_port}/report.html"
                _, bad = _browse(browser, url)
            finally:
                browser.close()
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert state["problems"] == []
    entries = result["listening"]["items"]
    assert len(state["audio"]) == 4 * len(entries)
    seconds = {r["id"]: r["duration_s"] for r in result["per_item"]}
    for src, ready, error, duration in state["audio"]:
        assert ready >= 1 and error is None, src
        assert duration == pytest.approx(seconds[pathlib.Path(src).stem])
    assert state["players"] == [4] * len(entries)
    assert played > 0
    images = dict(state["images"])
    assert set(images) == {e["spectrogram"] for e in entries} | set(
        result["figures"].values()
    )
    assert all(width > 0 for width in images.values()), images
    players = {f"item-{e['id']}": 4 for e in entries}  # one row a player
    assert dict(state["tables"]) == {
        "enhancement-quality-and-cost": 3,
        "elbo-terms-bits-per-real-dimension-lower-is-better": 2,
        "importance-of-condition": 3,
        "per-item": 2,
        **players,
    }
    # the checks catch a missing file: the broken copy fails them
    assert any(
        p.startswith("404") and missing_wav in p for p in bad["problems"]
    )
    assert any(p.startswith("404") and "ioc.png" in p for p in bad["problems"])
    assert dict(bad["images"])["figures/ioc.png"] == 0
    assert [s for s, _, e, _ in bad["audio"] if e is not None] == [missing_wav]


def test_items_are_enhance_stages_with_seed_plus_index(
    demo_run, tiny_model, one_thread
):
    result, out, root = demo_run
    enhancer = DiffusionEnhancement.from_hparams(source=str(tiny_model))
    for index, item in enumerate(demo.load_test_items(root / "data", 2)):
        noisy = read_mono(item["noisy"], enhancer.sample_rate)
        stages = enhancer.enhance_stages(noisy, steps=1, seed=index)
        for name in ("stage1", "stage1+2"):
            path = out / "enhanced" / name / f"{item['id']}.wav"
            wav, _ = sf.read(path, dtype="float32")
            # files are within full scale: divided by their peak beyond it
            expected = stages[name].float()
            expected = expected / max(1.0, float(expected.abs().max()))
            assert torch.equal(torch.from_numpy(wav), expected)
    assert result["settings"]["seed"] == 0


def test_stage1_only_model_and_no_logs(tmp_path):
    model = _tiny_model(tmp_path / "m", refiner=False, logs=False)
    result = demo.run_demo(
        model_dir=model,
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "out",
        steps=1,
        max_items=1,
        elbo=ElboOptions(items=0),
        ioc=IocOptions(items=0),
        threads=1,
        samples_dir=DEFAULT_SAMPLES,
        progress=False,
    )
    assert set(result["systems"]) == {"noisy", "stage1"}
    assert "elbo" not in result and "ioc" not in result
    assert set(result["figures"]) == {"spectrograms"}
    notes = " ".join(result["notes"])
    assert "no refiner" in notes
    assert "train_log_score.txt" in notes
    assert sorted(
        p.name for p in (tmp_path / "out" / "enhanced").iterdir()
    ) == ["stage1"]


def test_rerun_replaces_output(tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    options = dict(
        model_dir=tiny_model,
        data_dir=tmp_path / "data",
        out_dir=out,
        steps=1,
        max_items=1,
        elbo=ElboOptions(items=0),
        ioc=IocOptions(items=0),
        threads=1,
        samples_dir=DEFAULT_SAMPLES,
        progress=False,
    )
    demo.run_demo(**options)
    assert not (out / "stale.txt").exists()
    assert (out / "report.json").is_file()


def test_prepare_demo_data_reuses_and_rebuilds(tmp_path):
    folder = tmp_path / "vb"
    info = demo.prepare_demo_data(
        folder, 1, samples_dir=DEFAULT_SAMPLES, progress=False
    )
    assert info["built_now"] and info["test_items"] == 1
    assert info["origin"] == str(DEFAULT_SAMPLES)
    again = demo.prepare_demo_data(
        folder, 1, samples_dir=DEFAULT_SAMPLES, progress=False
    )
    assert not again["built_now"]
    more = demo.prepare_demo_data(
        folder, 2, samples_dir=DEFAULT_SAMPLES, progress=False
    )
    assert more["built_now"] and more["test_items"] == 2
    # a folder that is not a demo build is used as it is, never rebuilt
    stamp = json.loads((folder / "minidata.json").read_text())
    stamp["train_minutes"] = 60.0
    (folder / "minidata.json").write_text(json.dumps(stamp))
    kept = demo.prepare_demo_data(
        folder, 50, samples_dir=DEFAULT_SAMPLES, progress=False
    )
    assert not kept["built_now"] and kept["test_items"] == 2


def test_load_test_items_plain_voicebank_layout(tmp_path):
    for sub in ("noisy_testset_wav", "clean_testset_wav"):
        (tmp_path / sub).mkdir()
        for uid in ("p232_002", "p232_001"):
            sf.write(tmp_path / sub / f"{uid}.wav", [0.1] * 800, 16000)
    items = demo.load_test_items(tmp_path)
    assert [i["id"] for i in items] == ["p232_001", "p232_002"]
    (tmp_path / "clean_testset_wav" / "p232_002.wav").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        demo.load_test_items(tmp_path)
    with pytest.raises(FileNotFoundError, match="no valid split"):
        demo.load_test_items(tmp_path, split="valid")


def test_main_exit_status_and_message(tmp_path, capsys):
    status = demo.main(
        [
            "--model",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith("speechbrain_elbo.demo: error: Loading the model")
    assert "does not exist" in err
    assert not (tmp_path / "out").exists()
    assert demo.main(["train", "--minutes", "30"]) == 2
    assert "tools/demo_train.py" in capsys.readouterr().err


def test_main_prints_summary(tmp_path, tiny_model, capsys):
    status = demo.main(
        [
            "--model",
            str(tiny_model),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--items",
            "1",
            "--steps",
            "1",
            "--elbo-items",
            "0",
            "--ioc-items",
            "0",
            "--samples-dir",
            str(DEFAULT_SAMPLES),
            "--no-progress",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "| stage 1 (diffusion) | 1 |" in printed
    assert str(tmp_path / "out" / "report.md") in printed


def test_pretrained_names(tmp_path, one_thread):
    with pytest.raises(PretrainedModelError, match="No bundled model named"):
        pretrained_path("nope")
    with pytest.raises(PretrainedModelError, match="plain folder name"):
        pretrained_path("../x")
    with pytest.raises(PretrainedModelError, match="Available: none"):
        pretrained_path("x", root=tmp_path)
    _tiny_model(tmp_path / "tiny-a", logs=False)
    (tmp_path / "empty").mkdir()
    assert available(tmp_path) == ["tiny-a"]
    with pytest.raises(PretrainedModelError, match="incomplete.*'tiny-a'"):
        pretrained_path("empty", root=tmp_path)
    enhancer = load_pretrained("tiny-a", root=tmp_path)
    assert enhancer.has_refiner
    for name in available():
        assert (pretrained_path(name) / "hyperparams.yaml").is_file()


def test_demo_train_takes_sizes_not_a_budget(script, tmp_path, capsys):
    tool = script("tools/demo_train.py")
    assert (tool.checkout_root() / tool.RECIPE).is_file()
    args = tool.build_parser().parse_args([])
    assert (args.epochs, args.train_minutes) == (60, 3.0)
    command = tool.recipe_command(
        "run.sh", "data", "out", epochs=4, steps=3, progress=False
    )
    assert command[:6] == ["bash", "run.sh", "data", "out", "--config", "small"]
    assert "--number_of_epochs=4" in command
    assert "--sampler_steps=3" in command
    assert command[-1] == "--noprogressbar"
    for bad, match in (
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--train-minutes", "0"], "--train-minutes must be in"),
        (["--items", "0"], "--items must be >= 1"),
    ):
        options = ["--work", str(tmp_path / "w"), "--no-progress", *bad]
        assert tool.main(options) == 1
        assert match in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_train_log_parsing(tmp_path):
    path = tmp_path / "log.txt"
    path.write_text(SCORE_LOG)
    epochs = figures.parse_train_log(path)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1]["valid pesq"] == 1.05
    assert epochs[0]["train batches"] == [16.0]
    assert epochs[0]["lr"] == pytest.approx(1e-4)


def test_training_figure_needs_epochs(tmp_path):
    with pytest.raises(ValueError, match="No epoch"):
        figures.plot_training(tmp_path / "x.png", {"score": []})
    assert not pathlib.Path(tmp_path / "x.png").exists()


def test_dnsmos_scores_clean_above_noisy():
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("librosa")
    scorer = run.dnsmos_scorer()
    speech, rate = sf.read(DEFAULT_SAMPLES / "speech_en.wav", dtype="float32")
    clean = torch.from_numpy(speech)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    noisy = clean + 0.5 * clean.abs().max() * noise
    good, bad = scorer(clean, rate), scorer(noisy, rate)
    assert set(good) == {"sig", "bak", "ovrl"}
    assert good["bak"] > bad["bak"] and good["ovrl"] > bad["ovrl"]
    assert scorer(clean * 10, rate) == pytest.approx(
        scorer(clean, rate), rel=0.05
    )


def test_without_apt_the_fixtures_are_used_loudly(
    tmp_path, tiny_model, monkeypatch, capsys
):
    from speechbrain_elbo.minidata import SourcesUnavailable, bank

    def no_apt(*args, **kwargs):
        raise SourcesUnavailable("apt-get: command not found")

    monkeypatch.setattr(bank, "prepare_speech", no_apt)
    result = demo.run_demo(
        model_dir=tiny_model,
        data_dir=tmp_path / "data",
        out_dir=tmp_path / "out",
        steps=1,
        max_items=1,
        elbo=ElboOptions(items=0),
        ioc=IocOptions(items=0),
        threads=1,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert result["data"]["fallback"] is True
    assert "smoke test" in " ".join(result["notes"])
    assert "**WARNING: the test data were built from the few seconds" in (
        (tmp_path / "out" / "report.md").read_text()
    )
    assert "apt-get: command not found" in capsys.readouterr().err


def test_paired_elbo_difference_by_hand():
    from types import SimpleNamespace

    from speechbrain_elbo.demo.analysis import _paired_difference

    def terms(value):
        return SimpleNamespace(total=torch.tensor([value]))

    first = [terms(v) for v in (-3.0, -3.5, -4.0)]
    second = [terms(v) for v in (-3.1, -3.7, -4.1)]  # diffs -0.1 -0.2 -0.1
    out = _paired_difference(first, second)
    assert out["mean"] == pytest.approx(-0.4 / 3)
    # sample std of (-0.1, -0.2, -0.1) is 0.057735; / sqrt(3)
    assert out["stderr"] == pytest.approx(0.057735 / 3**0.5, rel=1e-4)
    assert out["crops"] == 3 and out["lower_by_two_stderr"]
    worse = _paired_difference(first, [terms(v) for v in (-2.0, -3.6, -4.0)])
    assert not worse["lower_by_two_stderr"]


def test_dereverb_demo_on_miniwhamr(tiny_model, tmp_path, one_thread):
    # --task dereverb: the MiniWHAMR test split (built from the fixtures),
    # its reverberant input and anechoic target, the rooms in the report
    root = tmp_path / "run"
    result = demo.run_demo(
        model_dir=tiny_model,
        data_dir=root / "data",
        out_dir=root / "out",
        task="dereverb",
        steps=1,
        max_items=2,
        elbo=ElboOptions(items=0),
        ioc=IocOptions(items=0),
        samples_dir=DEFAULT_SAMPLES,
        progress=False,
    )
    stamp = json.loads((root / "data" / "minidata.json").read_text())
    assert stamp["kind"] == "MiniWHAMR"
    items = demo.load_test_items(root / "data", 2)
    tt = root / "data" / "wav16k" / "min" / "tt"
    assert [pathlib.Path(i["noisy"]).parent for i in items] == [
        tt / "s1_reverb"
    ] * 2
    assert [pathlib.Path(i["clean"]).parent.name for i in items] == [
        "s1_anechoic"
    ] * 2
    # the scores are those of the reverberant files against the anechoic
    for record, item in zip(result["per_item"], items, strict=True):
        reverb, anechoic = (
            read_mono(item[k], 16000) for k in ("noisy", "clean")
        )
        assert record["noisy"]["si_sdr"] == pytest.approx(
            float(si_sdr(reverb, anechoic)), abs=1e-3
        )
        assert 0.1 < record["rt60_s"] < 1.5 and "drr_db" in record
        assert record["snr_db"] is None  # no noise in the reverberant input
    assert result["data"]["task"] == "dereverb"
    page = (root / "out" / "report.md").read_text()
    assert "| reverberant input | 2 |" in page and "noisy input" not in page
    assert "measured RT60" in page and "RT60 (s)" in page
    assert "SNRs" not in page
    html = (root / "out" / "report.html").read_text()
    assert "over the reverberant input" in html
    with pytest.raises(ValueError, match="task must be one of"):
        demo.DemoOptions(task="separate")
