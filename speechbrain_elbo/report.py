"""Writing the demo report: JSON, Markdown tables and PNG figures.

:func:`speechbrain_elbo.demo.run_demo` measures; this module only presents
what it measured:

- :func:`write_json_atomic`: ``report.json`` (NaN written as ``null``, so
  the file is strict JSON), through a temporary file and a rename;
- :func:`render_markdown`: ``report.md``, the same numbers as tables;
- :func:`plot_spectrograms`, :func:`plot_ioc`, :func:`plot_training`: the
  figures, drawn with matplotlib's non-interactive ``Agg`` backend;
- :func:`parse_train_log`: the epochs of a SpeechBrain ``FileTrainLogger``
  file (``train_log.txt``), for the training curves.

matplotlib is needed for the figures only; without it the figures are
skipped with a note in the report.

Example
-------
>>> line = ("epoch: 3, lr: 1.00e-04 - train loss: 1.26e-01, train batches: "
...         "[16, 16] - valid loss: 3.26e-01, valid pesq: 1.02")
>>> parse_train_log_lines([line])  # doctest: +NORMALIZE_WHITESPACE
[{'epoch': 3, 'lr': 0.0001, 'train loss': 0.126,
  'train batches': [16.0, 16.0], 'valid loss': 0.326, 'valid pesq': 1.02}]
"""

import json
import math
import os
import pathlib
import re
import tempfile

import torch

__all__ = [
    "SYSTEMS",
    "finite_or_none",
    "write_json_atomic",
    "parse_train_log",
    "parse_train_log_lines",
    "render_markdown",
    "have_matplotlib",
    "plot_spectrograms",
    "plot_ioc",
    "plot_training",
    "log_spectrogram",
]

#: The systems of the report, in the order of the tables.
SYSTEMS = ("noisy", "stage1", "stage1+2")

#: Labels of the systems in tables and figures.
SYSTEM_LABELS = {
    "noisy": "noisy input",
    "stage1": "stage 1 (diffusion)",
    "stage1+2": "stage 1+2 (diffusion + refiner)",
    "clean": "clean reference",
}

_ENTRY = re.compile(r"\s*([A-Za-z_][\w ]*?):\s*(\[[^\]]*\]|[^,]+)\s*(?:,|$)")


def finite_or_none(value):
    """Replace NaN and infinities (also nested) by ``None``, for JSON.

    Example
    -------
    >>> finite_or_none({"a": float("nan"), "b": [1.0, float("inf")], "c": 2})
    {'a': None, 'b': [1.0, None], 'c': 2}
    """
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path, data):
    """Write ``data`` as strict JSON (no NaN) via a temporary file + rename.

    Arguments
    ---------
    path : str or pathlib.Path
        The JSON file.
    data : dict
        JSON-serialisable content; NaN and infinities become ``null``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "r.json"
    >>> write_json_atomic(path, {"pesq": float("nan"), "n": 2})
    >>> path.read_text()
    '{\\n  "pesq": null,\\n  "n": 2\\n}\\n'
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite_or_none(data), indent=2, allow_nan=False)
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".part", dir=path.parent
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _number(text):
    text = text.strip()
    if text.startswith("["):
        inner = text[1:-1].strip()
        return [float(v) for v in inner.split(",") if v.strip()]
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if re.fullmatch(r"-?\d+", text) else value


def parse_train_log_lines(lines):
    """The epoch lines of a ``FileTrainLogger`` log as dicts.

    Lines look like ``epoch: 3, lr: 1.00e-04 - train loss: 1.26e-01, ...
    - valid loss: 3.26e-01, valid pesq: 1.02``; groups are separated by
    ``" - "`` and entries by commas (lists in brackets are kept whole).
    Lines that do not start with ``epoch:`` (e.g. the test lines) are
    ignored.

    Arguments
    ---------
    lines : iterable of str
        The lines of the log.

    Returns
    -------
    list of dict
        One dict per epoch, keys as in the log (``"epoch"``, ``"lr"``,
        ``"train loss"``, ``"valid loss"``, ``"valid pesq"``...), values
        numbers (lists for bracketed values).
    """
    epochs = []
    for line in lines:
        line = line.strip()
        if not line.startswith("epoch:"):
            continue
        record = {}
        for group in line.split(" - "):
            for key, value in _ENTRY.findall(group):
                record[key.strip()] = _number(value)
        if isinstance(record.get("epoch"), int):
            epochs.append(record)
    return epochs


def parse_train_log(path):
    """:func:`parse_train_log_lines` of a file.

    Arguments
    ---------
    path : str or pathlib.Path
        A ``train_log.txt`` written by SpeechBrain's ``FileTrainLogger``.

    Returns
    -------
    list of dict

    Example
    -------
    >>> path = getfixture("tmp_path") / "train_log.txt"
    >>> _ = path.write_text("epoch: 1, lr: 1e-4 - train loss: 2.0 - "
    ...                     "valid loss: 3.0\\ntest: noisy - test pesq: 1.9\\n")
    >>> [(e["epoch"], e["train loss"], e["valid loss"])
    ...  for e in parse_train_log(path)]
    [(1, 2.0, 3.0)]
    """
    with open(path, encoding="utf-8") as handle:
        return parse_train_log_lines(handle)


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------
def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(report):
    """``report.md``: the numbers of ``report.json`` as tables.

    Arguments
    ---------
    report : dict
        The report written by :func:`speechbrain_elbo.demo.run_demo`.

    Returns
    -------
    str
        Markdown text.

    Example
    -------
    >>> report = {"systems": {"noisy": {"pesq": 1.5, "estoi": 0.7,
    ...     "si_sdr": 8.0, "nfe": 0, "rtf": 0.0, "count": 2}},
    ...     "notes": ["a note"]}
    >>> lines = render_markdown(report).splitlines()
    >>> lines[0]
    '# Two-stage diffusion speech enhancement: demo report'
    >>> [line for line in lines if line.startswith("| noisy")]
    ['| noisy input | 2 | 1.500 | 0.700 | 8.00 | - | - |']
    >>> lines[-1]
    '- a note'
    """
    lines = ["# Two-stage diffusion speech enhancement: demo report", ""]
    model = report.get("model", {})
    data = report.get("data", {})
    settings = report.get("settings", {})
    if data.get("fallback"):
        lines += [
            "> **WARNING: the test data were built from the few seconds of "
            "committed fixtures (the Debian audio packages could not be "
            "fetched). The numbers below are a smoke test, not a "
            "measurement.**",
            "",
        ]
    if model:
        lines.append(
            f"- Model: `{model.get('dir', '?')}` "
            f"({model.get('stages', '?')} stages)"
        )
        card = model.get("card") or {}
        for key, value in card.items():
            lines.append(f"  - {key}: {value}")
    if data:
        lines.append(
            f"- Data: `{data.get('dir', '?')}`, {data.get('items', '?')} "
            f"test items, {_fmt(data.get('audio_seconds'), 1)} s of audio "
            f"(sources: {data.get('origin', '?')})"
        )
    if settings:
        sampler = settings.get("sampler", {})
        lines.append(
            f"- Sampler: {sampler.get('name', '?')}, "
            f"{sampler.get('steps', '?')} steps, "
            f"{sampler.get('corrector_steps', '?')} corrector step(s); "
            f"seed {settings.get('seed', '?')}; "
            f"{settings.get('threads', '?')} CPU thread(s) on "
            f"{settings.get('device', '?')}"
        )
    timing = report.get("timing", {})
    if timing:
        lines.append(
            "- Wall time: "
            + ", ".join(f"{k} {_fmt(v, 1)} s" for k, v in timing.items())
        )
    lines.append("")

    systems = report.get("systems", {})
    if systems:
        dnsmos = any("dnsmos_ovrl" in s for s in systems.values())
        header = [
            "system",
            "items",
            "PESQ-WB",
            "ESTOI",
            "SI-SDR (dB)",
            "NFE",
            "RTF",
        ]
        if dnsmos:
            header += ["DNSMOS SIG", "DNSMOS BAK", "DNSMOS OVRL"]
        rows = []
        for name in SYSTEMS:
            if name not in systems:
                continue
            stats = systems[name]
            processed = name != "noisy"
            row = [
                SYSTEM_LABELS[name],
                _fmt(stats.get("count")),
                _fmt(stats.get("pesq")),
                _fmt(stats.get("estoi")),
                _fmt(stats.get("si_sdr"), 2),
                _fmt(stats.get("nfe")) if processed else "-",
                _fmt(stats.get("rtf"), 3) if processed else "-",
            ]
            if dnsmos:
                row += [
                    _fmt(stats.get(f"dnsmos_{k}"), 2)
                    for k in ("sig", "bak", "ovrl")
                ]
            rows.append(row)
        lines += ["## Enhancement quality and cost", ""]
        lines += _table(header, rows)
        lines += [
            "",
            "Means over the test items (PESQ-WB: ITU-T P.862.2, 1.04-4.64; "
            "ESTOI: 0-1; SI-SDR in dB; higher is better). NFE: "
            "score-network evaluations per utterance (stage 1+2 adds one "
            "refiner pass). RTF: processing time / audio duration.",
            "",
        ]

    elbo = report.get("elbo")
    if elbo and elbo.get("stage1"):
        lines += [
            "## ELBO terms (bits per real dimension, lower is better)",
            "",
        ]
        header = [
            "decoder",
            "-ELBO",
            "prior",
            "diffusion",
            "reconstruction",
            "std. err.",
            "decoder variance",
        ]
        rows = []
        for name in ("stage1", "stage1+2"):
            terms = elbo.get(name)
            if not terms:
                continue
            rows.append(
                [
                    SYSTEM_LABELS[name],
                    _fmt(terms.get("total"), 4),
                    _fmt(terms.get("prior"), 4),
                    _fmt(terms.get("diffusion"), 4),
                    _fmt(terms.get("reconstruction"), 4),
                    _fmt(terms.get("stderr"), 4),
                    f"{elbo.get('decoder_variance', {}).get(name, 0.0):.3g}",
                ]
            )
        lines += _table(header, rows)
        lines += [
            "",
            f"On {elbo.get('items')} test crops of at most "
            f"{_fmt(elbo.get('crop_seconds'), 2)} s; "
            f"{elbo.get('diffusion_samples')} diffusion and "
            f"{elbo.get('reconstruction_samples')} reconstruction samples "
            "per crop, the same random draws for both rows (so prior and "
            "diffusion agree and the rows differ by the reconstruction "
            "term). Decoder variance: "
            f"{elbo.get('decoder_variance', {}).get('source', '?')}.",
            "",
        ]

    ioc = report.get("ioc")
    if ioc and ioc.get("t"):
        lines += ["## Importance of Condition", ""]
        rows = [
            [_fmt(t, 3), _fmt(s, 4), _fmt(v, 3), _fmt(d, 3)]
            for t, s, v, d in zip(
                ioc["t"], ioc["sigma"], ioc["ioc"], ioc["ioc_std"], strict=True
            )
        ]
        lines += _table(["t", "sigma_t", "IoC", "std over items"], rows)
        lines += [
            "",
            f"IoC(t) = |J_y|^2 / (|J_y|^2 + |J_x|^2) of the Tweedie estimate "
            f"on {ioc.get('items')} crops, {ioc.get('probes')} Hutchinson "
            "probe(s) per time: near 1 the model copies the noisy input, "
            "near 0 it follows the diffused state.",
            "",
        ]

    figures = report.get("figures", {})
    if figures:
        lines += ["## Figures", ""]
        for name, path in figures.items():
            lines.append(f"![{name}]({path})")
        lines.append("")

    per_item = report.get("per_item", [])
    if per_item:
        lines += ["## Per item", ""]
        header = ["id", "s", "SNR (dB)"] + [
            f"{m} {s}" for s in SYSTEMS for m in ("PESQ", "SI-SDR")
        ]
        rows = []
        for item in per_item:
            row = [
                item["id"],
                _fmt(item.get("duration_s"), 1),
                _fmt(item.get("snr_db"), 1),
            ]
            for name in SYSTEMS:
                scores = item.get(name, {})
                row += [
                    _fmt(scores.get("pesq"), 2),
                    _fmt(scores.get("si_sdr"), 1),
                ]
            rows.append(row)
        lines += _table(header, rows)
        lines.append("")

    notes = report.get("notes", [])
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {note}" for note in notes]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------
def have_matplotlib():
    """Whether matplotlib can be imported (the figures need it).

    Example
    -------
    >>> isinstance(have_matplotlib(), bool)
    True
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=".png", dir=path.parent
    )
    os.close(handle)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        pathlib.Path(tmp).unlink(missing_ok=True)
        _pyplot().close(fig)
    return path


def log_spectrogram(waveform, n_fft=510, hop_length=128):
    """Magnitude in dB of a waveform's STFT (periodic Hann), shape (F, T).

    Example
    -------
    >>> log_spectrogram(torch.zeros(1600)).shape
    torch.Size([256, 13])
    """
    waveform = torch.as_tensor(waveform, dtype=torch.float32).reshape(-1)
    spec = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop_length,
        window=torch.hann_window(n_fft),
        return_complex=True,
    )
    return 20.0 * torch.log10(spec.abs() + 1e-6)


def plot_spectrograms(path, signals, sample_rate=16000, title=None):
    """Stacked spectrograms of several versions of one utterance.

    Arguments
    ---------
    path : str or pathlib.Path
        Output PNG.
    signals : dict
        Panel title -> waveform (1-D), drawn top to bottom in dict order,
        on one colour scale (80 dB below the loudest bin of all panels).
    sample_rate : int
        Sample rate of the waveforms (for the axes).
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.

    Example
    -------
    >>> path = getfixture("tmp_path") / "spec.png"
    >>> t = torch.arange(8000) / 16000
    >>> _ = plot_spectrograms(path, {"a": torch.sin(3000 * t),
    ...                              "b": torch.sin(5000 * t)})
    >>> path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    plt = _pyplot()
    specs = {name: log_spectrogram(wav) for name, wav in signals.items()}
    top = max(float(s.max()) for s in specs.values())
    fig, axes = plt.subplots(
        len(specs), 1, figsize=(9, 2.2 * len(specs)), sharex=True
    )
    axes = [axes] if len(specs) == 1 else list(axes)
    image = None
    for ax, (name, spec) in zip(axes, specs.items(), strict=True):
        seconds = spec.shape[1] * 128 / sample_rate
        image = ax.imshow(
            spec.numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - 80.0,
            vmax=top,
            extent=(0.0, seconds, 0.0, sample_rate / 2000.0),
        )
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.colorbar(image, ax=axes, label="dB", shrink=0.8)
    return _save(fig, path)


def plot_ioc(path, ioc, title=None):
    """The IoC curve against sigma_t (log axis), with its spread.

    Arguments
    ---------
    path : str or pathlib.Path
        Output PNG.
    ioc : dict
        ``{"t", "sigma", "ioc", "ioc_std"}`` lists (see
        :func:`speechbrain_elbo.ioc.ioc_curve`).
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> path = getfixture("tmp_path") / "ioc.png"
    >>> _ = plot_ioc(path, {"t": [0.1, 1.0], "sigma": [0.02, 0.4],
    ...                     "ioc": [0.2, 0.9], "ioc_std": [0.0, 0.1]})
    >>> path.stat().st_size > 1000
    True
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        ioc["sigma"],
        ioc["ioc"],
        yerr=ioc["ioc_std"],
        marker="o",
        capsize=3,
    )
    for t, s, v in zip(ioc["t"], ioc["sigma"], ioc["ioc"], strict=True):
        ax.annotate(
            f"t={t:.2f}",
            (s, v),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=7,
        )
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.05, 1.02)
    ax.set_xlabel("sigma_t (noise standard deviation)")
    ax.set_ylabel("IoC")
    ax.set_title(title or "Importance of Condition")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_training(path, logs, title=None):
    """Training and validation loss (and validation PESQ) per epoch.

    Arguments
    ---------
    path : str or pathlib.Path
        Output PNG.
    logs : dict
        Stage name -> list of epoch dicts (:func:`parse_train_log`).
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> path = getfixture("tmp_path") / "train.png"
    >>> logs = {"score": [{"epoch": 1, "train loss": 2.0, "valid loss": 3.0},
    ...                   {"epoch": 2, "train loss": 1.0, "valid loss": 2.5}]}
    >>> plot_training(path, logs).name
    'train.png'
    """
    plt = _pyplot()
    stages = [name for name, epochs in logs.items() if epochs]
    if not stages:
        raise ValueError("No epoch in the training logs: nothing to plot.")
    with_pesq = any("valid pesq" in e for name in stages for e in logs[name])
    columns = len(stages) + (1 if with_pesq else 0)
    fig, axes = plt.subplots(1, columns, figsize=(4.5 * columns, 3.6))
    axes = [axes] if columns == 1 else list(axes)
    for ax, name in zip(axes, stages, strict=False):
        epochs = logs[name]
        for key, style in (("train loss", "-o"), ("valid loss", "-s")):
            points = [(e["epoch"], e[key]) for e in epochs if key in e]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, label=key, markersize=3)
        ax.set_title(f"{name}: loss")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if with_pesq:
        ax = axes[-1]
        for name in stages:
            points = [
                (e["epoch"], e["valid pesq"])
                for e in logs[name]
                if "valid pesq" in e
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, "-o", label=name, markersize=3)
        ax.set_title("validation PESQ-WB")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
