"""The demo run: load a model, enhance the test items, score, time, report.

:func:`run_demo` takes an exported two-stage model (by default the one
bundled in :mod:`speechbrain_elbo.pretrained`) and the MiniVB (or, for
dereverberation, MiniWHAMR) test split
(:func:`speechbrain_elbo.demo.data.prepare_demo_data`), and writes into
``out_dir`` the report (:mod:`speechbrain_elbo.demo.report`), its figures
(:mod:`speechbrain_elbo.demo.figures`), the enhanced WAV files and a copy of
the model. Its settings are one :class:`DemoOptions` (with
:class:`ElboOptions` and :class:`IocOptions` for the two analyses of
:mod:`speechbrain_elbo.demo.analysis`).

Stage 1 and stage 1+2 are the *same* stage-1 sample, with and without the
refiner (docs/method.md, section 7): each item is enhanced once by
:meth:`~speechbrain_elbo.inference.DiffusionEnhancement.enhance_stages`.

Example
-------
>>> options = DemoOptions(max_items=8, elbo=ElboOptions(items=0))
>>> options.elbo.items, options.ioc.items, options.seed
(0, 2, 0)
>>> DemoOptions(max_items=0)
Traceback (most recent call last):
...
ValueError: max_items must be >= 1 or None, got 0.
"""

import dataclasses
import json
import math
import os
import pathlib
import platform
import shutil
import time
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from speechbrain_elbo import fileio
from speechbrain_elbo.demo import analysis, figures
from speechbrain_elbo.demo.data import (
    DEFAULT_ITEMS,
    TASKS,
    load_test_items,
    prepare_demo_data,
    read_mono,
)
from speechbrain_elbo.demo.report import system_labels, write_report
from speechbrain_elbo.metrics import estoi, nan_mean, pesq_wb, si_sdr
from speechbrain_elbo.runtime import set_threads

__all__ = [
    "DEFAULT_OUT",
    "LISTEN_METRIC",
    "TRAIN_LOGS",
    "DemoError",
    "DemoOptions",
    "ElboOptions",
    "IocOptions",
    "gain_items",
    "run_demo",
]

#: Where ``make demo`` writes its report (replaced on every run).
DEFAULT_OUT = TASKS["denoise"].out

#: Training logs of each stage in an exported model folder (for the
#: training curves).
TRAIN_LOGS = {
    "score": "train_log_score.txt",
    "refiner": "train_log_refiner.txt",
}


class DemoError(RuntimeError):
    """A step of the demo failed; the message names the step and the fix."""


@dataclasses.dataclass
class ElboOptions:
    """The ELBO terms of the report (:func:`analysis.elbo_summary`).

    Attributes
    ----------
    items : int
        Test crops evaluated (spread over the items); 0 skips the ELBO.
    fit_items : int
        Held-out crops (the corpus' validation items, else other test
        items)
        for the decoder variances.
    diffusion_samples, reconstruction_samples : int
        Monte Carlo samples per crop.
    crop_frames : int
        STFT frames per crop (256: 2.04 s, the recipe's crop).
    """

    items: int = 16
    fit_items: int = 8
    diffusion_samples: int = 8
    reconstruction_samples: int = 2
    crop_frames: int = 256


@dataclasses.dataclass
class IocOptions:
    """The IoC curve of the report (:func:`analysis.ioc_summary`).

    Attributes
    ----------
    items : int
        Crops (spread over the items); 0 skips the curve.
    times : int
        Diffusion times from t_eps to T.
    probes : int
        Hutchinson probes per time.
    crop_frames : int
        STFT frames per crop.
    """

    items: int = 2
    times: int = 8
    probes: int = 2
    crop_frames: int = 128


@dataclasses.dataclass
class DemoOptions:
    """Settings of a demo run.

    Attributes
    ----------
    task : str
        ``denoise`` (MiniVB and the bundled ``minivb-small``) or
        ``dereverb`` (MiniWHAMR and ``miniwhamr-small``):
        :data:`~speechbrain_elbo.demo.data.TASKS`.
    max_items : int or None
        Test items to enhance (None: all).
    sampler : str, optional
        Sampler name (default: the model's).
    steps : int, optional
        Sampler steps (default: the model's).
    seed : int
        Item k is enhanced with seed ``seed + k``.
    device : str
        Torch device.
    threads : int, optional
        Torch CPU threads during the run (default: the free cores,
        :func:`speechbrain_elbo.runtime.set_threads`' rule; the
        previous setting is restored at the end).
    elbo : ElboOptions
        The ELBO terms.
    ioc : IocOptions
        The IoC curve.
    dnsmos_items : int
        Items scored with DNSMOS when ``speechmos`` is installed (about 2 s
        per clip and system on 2 cores).
    cache_dir, samples_dir : str or pathlib.Path, optional
        Sources of a MiniVB or MiniWHAMR build, see
        :func:`~speechbrain_elbo.demo.data.prepare_demo_data`.
    progress : bool
        Progress bars.
    """

    task: str = "denoise"
    max_items: int | None = DEFAULT_ITEMS
    sampler: str | None = None
    steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    elbo: ElboOptions = dataclasses.field(default_factory=ElboOptions)
    ioc: IocOptions = dataclasses.field(default_factory=IocOptions)
    dnsmos_items: int = 8
    cache_dir: str | pathlib.Path | None = None
    samples_dir: str | pathlib.Path | None = None
    progress: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(
                f"task must be one of {', '.join(TASKS)}, got {self.task!r}."
            )
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(
                f"max_items must be >= 1 or None, got {self.max_items}."
            )


# ---------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------
def dnsmos_scorer():
    """``f(waveform, rate) -> {"sig", "bak", "ovrl"}`` (speechmos) or None.

    DNSMOS P.835 (non-intrusive: no clean reference) from the ``speechmos``
    package, which ships its ONNX models; waveforms are resampled to 16 kHz
    and scaled into [-1, 1] when they exceed it.
    """
    try:
        from speechmos import dnsmos
    except ImportError:
        return None

    def score(waveform, rate=16000):
        waveform = waveform.detach().cpu().float().reshape(-1)
        if rate != 16000:
            import torchaudio.functional as AF

            waveform = AF.resample(waveform, rate, 16000)
        peak = float(waveform.abs().max()) if waveform.numel() else 0.0
        if peak > 1.0:
            waveform = waveform / peak
        result = dnsmos.run(waveform.numpy(), sr=16000)
        return {
            key: float(result[f"{key}_mos"]) for key in ("sig", "bak", "ovrl")
        }

    return score


def _scores(estimate, clean, sample_rate):
    return {
        "pesq": pesq_wb(estimate, clean, sample_rate),
        "estoi": estoi(estimate, clean, sample_rate),
        "si_sdr": float(si_sdr(estimate, clean)[0]),
    }


def _system_stats(rows):
    """Means of the per-item scores of one system (NaN PESQ left out)."""
    stats = {
        key: nan_mean([r[key] for r in rows])
        for key in ("pesq", "estoi", "si_sdr")
    }
    stats["count"] = len(rows)
    failed = sum(1 for r in rows if not math.isfinite(r["pesq"]))
    if failed:
        stats["pesq_failed"] = failed
    for key in ("sig", "bak", "ovrl"):
        values = [r[f"dnsmos_{key}"] for r in rows if f"dnsmos_{key}" in r]
        if values:
            stats[f"dnsmos_{key}"] = nan_mean(values)
            stats["dnsmos_count"] = len(values)
    return stats


#: The per-item score that chooses the items to listen to.
LISTEN_METRIC = "pesq"


def gain_items(per_item, system, metric=LISTEN_METRIC):
    """The items with the best, median and worst gain of ``system``.

    The gain of an item is ``system``'s score minus the noisy input's;
    items whose score is not finite (a failed PESQ) are left out. An item
    that holds several ranks (few items) is listed once with all of them.

    Arguments
    ---------
    per_item : list of dict
        The report's ``per_item`` records.
    system : str
        The system whose gain ranks the items (``"stage1+2"``).
    metric : str
        The score (``"pesq"``).

    Returns
    -------
    list of (int, list of str, float)
        (index into ``per_item``, ranks, gain), best first; ``[(0,
        ["first"], nan)]`` when no item has a finite gain.

    Example
    -------
    >>> rows = [{"noisy": {"pesq": 1.0}, "s": {"pesq": p}}
    ...         for p in (1.5, 1.2, 2.0, float("nan"))]
    >>> [(i, r, round(g, 2)) for i, r, g in gain_items(rows, "s")]
    [(2, ['best'], 1.0), (0, ['median'], 0.5), (1, ['worst'], 0.2)]
    >>> gain_items(rows[:1], "s")
    [(0, ['best', 'median', 'worst'], 0.5)]
    """
    gains = sorted(
        (item[system][metric] - item["noisy"][metric], index)
        for index, item in enumerate(per_item)
        if math.isfinite(item[system][metric])
        and math.isfinite(item["noisy"][metric])
    )
    if not gains:
        return [(0, ["first"], math.nan)]
    chosen = {}
    for rank, (gain, index) in (
        ("best", gains[-1]),
        ("median", gains[len(gains) // 2]),
        ("worst", gains[0]),
    ):
        chosen.setdefault(index, (index, [], gain))[1].append(rank)
    return list(chosen.values())


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------
def _sampler_info(sampler):
    return {
        "name": sampler.name,
        "steps": sampler.steps,
        "corrector_steps": sampler.corrector_steps,
        "snr": sampler.snr,
    }


def _model_info(model_dir, enhancer):
    """The model's entry of the report; ``dir`` is its copy, ``model/``."""
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card_names = ("model_card.md", "model_card.json")
    card_file = [n for n in card_names if (model_dir / n).is_file()][:1]
    info = {
        "name": model_dir.name,
        "dir": "model",
        "card_file": f"model/{card_file[0]}" if card_file else None,
        "stages": 2 if enhancer.has_refiner else 1,
        "sde": card.get("sde", repr(enhancer.sde)),
        "default_sampler": _sampler_info(enhancer.default_sampler),
        "score_parameters": sum(
            p.numel() for p in enhancer.score_model.backbone.parameters()
        ),
        "card": card.get("model_card", {}),
    }
    if enhancer.has_refiner:
        info["refiner_parameters"] = sum(
            p.numel() for p in enhancer.refiner.parameters()
        )
    return info


def _origin_name(origin):
    """``"debian"``, or the name of the fixture folder (not its path)."""
    origin = str(origin)
    return pathlib.Path(origin).name if os.sep in origin else origin


def _copy_model(model_dir, target):
    def skip(folder, names):
        return [n for n in names if n.startswith(".") or n == "__pycache__"]

    shutil.copytree(model_dir, target, ignore=skip)


class _DemoRun:
    """One run of the demo: its model, items, results, notes and timing."""

    def __init__(self, model_dir, data_dir, out_dir, options):
        self.model_dir = model_dir
        self.data_dir = pathlib.Path(data_dir)
        self.out_dir = pathlib.Path(out_dir)
        self.options = options
        self.timing = {}
        self.notes = []
        self.report = {"format_version": 1}

    @contextmanager
    def step(self, name, key=None):
        """Time the block into ``timing[key]``; failures become DemoError."""
        start = time.perf_counter()
        try:
            yield
        except (DemoError, KeyboardInterrupt):
            raise
        except Exception as error:
            raise DemoError(
                f"{name} failed: {type(error).__name__}: {error}"
            ) from error
        if key is not None:
            self.timing[key] = time.perf_counter() - start

    def load_model(self):
        from speechbrain_elbo.hub import resolve_source
        from speechbrain_elbo.inference import DiffusionEnhancement

        model_dir = self.model_dir or TASKS[self.options.task].model
        # a folder, a bundled model's name or a hub id, as from_hparams
        self.model_dir = resolve_source(str(model_dir)).folder
        self.enhancer = DiffusionEnhancement.from_hparams(
            source=str(self.model_dir),
            run_opts={"device": self.options.device},
        )
        self.rate = self.enhancer.sample_rate
        self.sampler = self.enhancer.make_sampler(
            self.options.sampler, self.options.steps
        )
        self.names = ["noisy", "stage1"]
        if self.enhancer.has_refiner:
            self.names.append("stage1+2")
        else:
            self.notes.append(
                "The model has no refiner (stage 1 only): no stage 1+2 row."
            )

    def prepare_data(self):
        max_items = self.options.max_items
        self.data = prepare_demo_data(
            self.data_dir,
            items=max_items or 100,
            cache_dir=self.options.cache_dir,
            samples_dir=self.options.samples_dir,
            progress=self.options.progress,
            task=self.options.task,
        )
        self.items = load_test_items(self.data_dir, max_items)
        if self.data["fallback"]:
            self.notes.append(
                "The Debian audio packages could not be fetched: the test "
                "data were built from the committed fixtures (a few seconds "
                "of audio). The numbers are a smoke test only."
            )
        if max_items is not None and len(self.items) < max_items:
            self.notes.append(
                f"Only {len(self.items)} test items were available "
                f"({max_items} asked)."
            )

    def _enhance_item(self, index, item, folder, dnsmos):
        """Enhance, save and score one item; its record and run time."""
        noisy = read_mono(item["noisy"], self.rate)
        clean = read_mono(item["clean"], self.rate)
        if clean.shape != noisy.shape:
            raise ValueError(
                f"{item['noisy']} and {item['clean']} differ in length; the "
                "data folder is inconsistent."
            )
        result = self.enhancer.enhance_stages(
            noisy,
            sampler=self.sampler.name,
            steps=self.sampler.steps,
            seed=self.options.seed + index,
        )
        result["noisy"] = noisy
        record = {
            "id": item["id"],
            "duration_s": noisy.shape[-1] / self.rate,
            "snr_db": item.get("snr_db"),
        }
        for key in ("rt60_s", "drr_db"):
            if key in item:
                record[key] = item[key]
        for name in self.names:
            if name != "noisy":
                fileio.write_audio_atomic(
                    folder / name / f"{item['id']}.wav", result[name], self.rate
                )
            record[name] = _scores(result[name], clean, self.rate)
            if dnsmos is not None and index < self.options.dnsmos_items:
                for key, value in dnsmos(result[name], self.rate).items():
                    record[name][f"dnsmos_{key}"] = value
        self.waves.append((noisy, clean))
        return record, result

    def enhance(self, folder):
        """Enhance every item into ``folder``; mean scores, audio seconds."""
        dnsmos = dnsmos_scorer()
        if dnsmos is None:
            self.notes.append(
                "DNSMOS skipped: install speechmos (pip install speechmos, "
                "with onnxruntime and librosa) to add it."
            )
        # one short warm-up pass so that the first item's timing does not
        # include one-time allocations
        first = read_mono(self.items[0]["noisy"], self.rate)
        self.enhancer.enhance_stages(
            first[: self.rate],
            sampler=self.sampler.name,
            steps=1,
            seed=self.options.seed,
        )
        self.per_item, self.waves = [], []
        seconds = dict.fromkeys(self.names[1:], 0.0)
        bar = tqdm(
            self.items,
            desc="Enhancing",
            unit="utt",
            disable=not self.options.progress,
        )
        for index, item in enumerate(bar):
            record, result = self._enhance_item(index, item, folder, dnsmos)
            self.per_item.append(record)
            for name in seconds:
                seconds[name] += result["seconds"][name]
            nfe = int(result["nfe"])
        audio = sum(record["duration_s"] for record in self.per_item)
        systems = {}
        for name in self.names:
            stats = _system_stats([record[name] for record in self.per_item])
            if name == "noisy":
                stats.update(nfe=0, rtf=0.0)
            else:
                refiner_pass = 1 if name == "stage1+2" else 0
                stats.update(nfe=nfe + refiner_pass, rtf=seconds[name] / audio)
            systems[name] = stats
        return systems, audio

    def describe(self, audio):
        """The model, data and settings entries of the report."""
        snrs = sorted({i["snr_db"] for i in self.items if "snr_db" in i})
        rt60s = [i["rt60_s"] for i in self.items if "rt60_s" in i]
        task = TASKS[self.options.task]
        self.report.update(
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            model=_model_info(self.model_dir, self.enhancer),
            data=dict(
                self.data,
                dir=self.data_dir.name,
                origin=_origin_name(self.data["origin"]),
                items=len(self.items),
                audio_seconds=audio,
                snrs_db=snrs,
                rt60_range_s=[min(rt60s), max(rt60s)] if rt60s else None,
                task=task.name,
                input_label=task.input_label,
            ),
            settings={
                "sampler": _sampler_info(self.sampler),
                "seed": self.options.seed,
                "device": str(self.enhancer.device),
                "threads": torch.get_num_threads(),
                "hardware": {
                    "cpu_count": os.cpu_count(),
                    "machine": platform.machine(),
                    "torch": torch.__version__,
                },
            },
        )

    def _held_out(self, chosen, count):
        """Pairs for the decoder variances, and where they come from."""
        try:
            valid = load_test_items(self.data_dir, count, "valid")
        except FileNotFoundError:
            rest = [i for i in range(len(self.items)) if i not in chosen]
            fit = [self.waves[i] for i in rest[:count]]
            return fit, "test items not used for the ELBO"
        fit = [
            (read_mono(v["noisy"], self.rate), read_mono(v["clean"], self.rate))
            for v in valid
        ]
        return fit, f"{TASKS[self.options.task].corpus} validation items"

    def elbo(self):
        opts = self.options.elbo
        chosen = analysis.evenly_spaced(len(self.items), opts.items)
        fit, fit_source = self._held_out(chosen, opts.fit_items)
        summary = analysis.elbo_summary(
            self.enhancer,
            [self.waves[i] for i in chosen],
            fit,
            crop_frames_count=opts.crop_frames,
            diffusion_samples=opts.diffusion_samples,
            reconstruction_samples=opts.reconstruction_samples,
            seed=self.options.seed,
            progress=self.options.progress,
        )
        if fit:
            summary["decoder_variance"]["source"] += f" ({fit_source})"
        summary["item_ids"] = [self.items[i]["id"] for i in chosen]
        self.report["elbo"] = summary

    def ioc(self):
        opts = self.options.ioc
        chosen = analysis.evenly_spaced(len(self.items), opts.items)
        summary = analysis.ioc_summary(
            self.enhancer,
            [self.waves[i] for i in chosen],
            num_times=opts.times,
            probes=opts.probes,
            crop_frames_count=opts.crop_frames,
            seed=self.options.seed,
        )
        summary["item_ids"] = [self.items[i]["id"] for i in chosen]
        self.report["ioc"] = summary

    def choose_listening(self, tmp):
        """The items to listen to in ``report.html``, their audio files.

        The best, median and worst PESQ gain of the last stage
        (:func:`gain_items`); their noisy input and clean reference are
        written under ``tmp/listen`` (the enhanced files are already in
        ``enhanced/``), all as paths relative to the output folder.
        """
        system = self.names[-1]
        entries = []
        for index, ranks, gain in gain_items(self.per_item, system):
            uid = self.per_item[index]["id"]
            audio = {}
            for name, wave in zip(
                ("noisy", "clean"), self.waves[index], strict=True
            ):
                fileio.write_audio_atomic(
                    tmp / "listen" / name / f"{uid}.wav", wave, self.rate
                )
                audio[name] = f"listen/{name}/{uid}.wav"
            for name in self.names[1:]:
                audio[name] = f"enhanced/{name}/{uid}.wav"
            entries.append(
                {"id": uid, "ranks": ranks, "gain": gain, "audio": audio}
            )
        self.report["listening"] = {
            "metric": LISTEN_METRIC,
            "system": system,
            "items": entries,
        }

    def _item_spectrograms(self, tmp, entry):
        """Spectrograms of one listening item; its path in the folder."""
        index = next(
            i for i, r in enumerate(self.per_item) if r["id"] == entry["id"]
        )
        record = self.per_item[index]
        noisy, clean = self.waves[index]
        labels = system_labels(self.report)
        first = labels["noisy"].replace(" input", "")
        panels = {f"{first} (PESQ {record['noisy']['pesq']:.2f})": noisy}
        for name in self.names[1:]:
            path = tmp / entry["audio"][name]
            label = f"{labels[name]} (PESQ {record[name]['pesq']:.2f})"
            panels[label] = read_mono(path, self.rate)
        panels["clean reference"] = clean
        ranks = entry["ranks"]
        system = self.report["listening"]["system"]
        if ranks == ["first"]:
            title = f"{record['id']} (no finite PESQ gain)"
        else:
            title = (
                f"{record['id']}: the item with the {' and '.join(ranks)} "
                f"PESQ gain of {system}"
            )
        # the median item's is the figure of report.md too
        name = "spectrograms"
        if "median" not in ranks and ranks != ["first"]:
            name = f"spectrograms_{ranks[0]}"
        figures.plot_spectrograms(
            tmp / "figures" / f"{name}.png", panels, self.rate, title
        )
        return name, f"figures/{name}.png"

    def draw_figures(self, tmp):
        """The figures into ``tmp/figures``; their paths in the report."""
        drawn = {}
        self.report["figures"] = drawn
        if not figures.have_matplotlib():
            self.notes.append(
                "Figures skipped: matplotlib is not installed "
                "(pip install matplotlib)."
            )
            return
        for entry in self.report["listening"]["items"]:
            name, path = self._item_spectrograms(tmp, entry)
            entry["spectrogram"] = path
            if name == "spectrograms":
                drawn[name] = path
        if "ioc" in self.report:
            figures.plot_ioc(tmp / "figures" / "ioc.png", self.report["ioc"])
            drawn["ioc"] = "figures/ioc.png"
        self._training_curves(tmp, drawn)

    def _training_curves(self, tmp, drawn):
        logs = {}
        for stage, filename in TRAIN_LOGS.items():
            path = self.model_dir / filename
            if path.is_file():
                logs[stage] = figures.parse_train_log(path)
        if not any(logs.values()):
            self.notes.append(
                "Training curves skipped: the model folder has no "
                f"{' / '.join(TRAIN_LOGS.values())}."
            )
            return
        figures.plot_training(
            tmp / "figures" / "training.png", logs, "Training of the model"
        )
        drawn["training"] = "figures/training.png"
        self.report["training"] = {
            stage: {"epochs": len(epochs), "last": epochs[-1]}
            for stage, epochs in logs.items()
            if epochs
        }

    def run(self):
        """All the steps; the report (also written into ``out_dir``)."""
        begin = time.perf_counter()
        with self.step("Loading the model", "load"):
            self.load_model()
        corpus = TASKS[self.options.task].corpus
        with self.step(f"Preparing the {corpus} test split", "data"):
            self.prepare_data()
        tmp = (
            self.out_dir.parent / f".{self.out_dir.name}.partial-{os.getpid()}"
        )
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "figures").mkdir(parents=True)
        try:
            with self.step("Enhancing the test split", "enhance"):
                systems, audio = self.enhance(tmp / "enhanced")
            self.describe(audio)
            self.report["systems"] = systems
            with self.step("Choosing the items to listen to"):
                self.choose_listening(tmp)
            if self.options.elbo.items > 0:
                with self.step("Estimating the ELBO terms", "elbo"):
                    self.elbo()
            if self.options.ioc.items > 0:
                with self.step("Computing the IoC curve", "ioc"):
                    self.ioc()
            with self.step("Drawing the figures", "figures"):
                self.draw_figures(tmp)
            with self.step("Writing the report"):
                _copy_model(self.model_dir, tmp / "model")
                self.report["per_item"] = self.per_item
                self.timing["total"] = time.perf_counter() - begin
                self.report.update(timing=self.timing, notes=self.notes)
                write_report(tmp, self.report)
                fileio.replace_folder(tmp, self.out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return fileio.finite_or_none(self.report)


def run_demo(
    model_dir=None,
    data_dir=None,
    out_dir=None,
    options=None,
    **changes,
):
    """Enhance a mini test split with a model and write the report.

    Writes into ``out_dir`` (replaced as a whole once the report is
    complete; a failed run leaves the previous one in place):
    ``report.json`` and ``report.md``, ``figures/``, ``enhanced/stage1/``
    and ``enhanced/stage1+2/`` (the enhanced WAV files) and ``model/`` (a
    copy of the model folder).

    Arguments
    ---------
    model_dir : str or pathlib.Path, optional
        An exported model folder (default: the task's bundled model,
        ``minivb-small`` or ``miniwhamr-small``).
    data_dir : str or pathlib.Path, optional
        The task's corpus folder (MiniVB or MiniWHAMR); its test split is
        built when missing, see
        :func:`~speechbrain_elbo.demo.data.prepare_demo_data` (default:
        the task's, ``results/demo_data/minivb-test`` for denoising).
    out_dir : str or pathlib.Path, optional
        Output folder (default: the task's, ``results/demo`` for
        denoising, ``results/demo-dereverb`` for dereverberation).
    options : DemoOptions, optional
        The settings (default ``DemoOptions()``).
    **changes
        Fields of :class:`DemoOptions` to change, e.g. ``max_items=8``.

    Returns
    -------
    dict
        The report (also in ``out_dir/report.json``).

    Raises
    ------
    DemoError
        When a step fails; the message names the step.
    """
    options = dataclasses.replace(options or DemoOptions(), **changes)
    task = TASKS[options.task]
    data_dir = task.data if data_dir is None else data_dir
    out_dir = task.out if out_dir is None else out_dir
    previous = torch.get_num_threads()
    set_threads(options.threads)
    try:
        return _DemoRun(model_dir, data_dir, out_dir, options).run()
    finally:
        torch.set_num_threads(previous)
