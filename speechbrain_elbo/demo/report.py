"""The demo's report: ``report.json``, ``report.md`` and ``report.html``.

:mod:`speechbrain_elbo.demo.run` measures and gathers its results in one
dict, the report (its keys are listed in docs/demo.md); this module only
presents it:

- :func:`write_report`: ``report.json`` (strict JSON, through
  :func:`speechbrain_elbo.fileio.write_json_atomic`), ``report.md`` and
  ``report.html`` (:mod:`speechbrain_elbo.demo.html_report`);
- :func:`header_entries` and :func:`sections`: the header's (label, text)
  lines (model, data, training budget, sampler, hardware, with a link to
  the full model card) and the tables of numbers, as data: both pages are
  rendered from them, so the numbers have one source;
- :func:`render_markdown`: ``report.md``;
- :func:`card_summary`: the header's lines about the model's training, read
  from its model card.

Paths in the report are relative to the output folder (the copy of the
model is ``model/``, the figures ``figures/``) or plain folder names: the
report can be moved or shared as it is.

Example
-------
>>> report = {"systems": {"noisy": {"pesq": 1.5, "estoi": 0.7,
...     "si_sdr": 8.0, "nfe": 0, "rtf": 0.0, "count": 2}},
...     "model": {"name": "tiny", "stages": 1, "card_file": "model/card.md",
...               "card": {"data": "none"}}}
>>> print(render_markdown(report))  # doctest: +ELLIPSIS
# Two-stage diffusion speech enhancement: demo report
<BLANKLINE>
- **Model**: `tiny`, 1 stage(s); full model card: [model/card.md](model/card.md)
- **Training data**: none
<BLANKLINE>
## Enhancement quality and cost
...
| noisy input | 2 | 1.500 | 0.700 | 8.00 | - | - |
...
"""

import math
from typing import NamedTuple

from speechbrain_elbo.fileio import write_json_atomic, write_text_atomic

__all__ = [
    "SYSTEMS",
    "SYSTEM_LABELS",
    "Section",
    "card_summary",
    "header_entries",
    "render_markdown",
    "sections",
    "system_labels",
    "write_report",
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


def system_labels(report):
    """The labels of the systems in a report: :data:`SYSTEM_LABELS`, with
    the input named as the report's data names it (``reverberant input``
    in the dereverberation demo).

    Example
    -------
    >>> system_labels({"data": {"input_label": "reverberant input"}})["noisy"]
    'reverberant input'
    >>> system_labels({})["noisy"]
    'noisy input'
    """
    labels = dict(SYSTEM_LABELS)
    label = report.get("data", {}).get("input_label")
    if label:
        labels["noisy"] = label
    return labels


#: Title of both pages.
TITLE = "Two-stage diffusion speech enhancement: demo report"

#: The banner of a report on the fallback test data (plain text).
FALLBACK_TEXT = (
    "WARNING: the test data were built from the few seconds of "
    "committed fixtures (the Debian audio packages could not be fetched). "
    "The numbers below are a smoke test, not a measurement."
)


class Section(NamedTuple):
    """One titled table of the report and the paragraphs below it.

    Cells and paragraphs are text with inline markdown (code spans, bold,
    links) only, which both renderers understand.
    """

    title: str
    header: list
    rows: list
    paragraphs: list


def write_report(folder, report):
    """Write ``report.json``, ``report.md`` and ``report.html``.

    Arguments
    ---------
    folder : str or pathlib.Path
        The output folder (created if needed).
    report : dict
        The report; NaN and infinities become ``null`` in the JSON and
        ``-`` in the tables.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> write_report(folder, {"notes": ["a note"], "x": float("nan")})
    >>> (folder / "report.json").read_text().count("null")
    1
    >>> (folder / "report.md").read_text().splitlines()[-1]
    '- a note'
    """
    # imported here: html_report builds on this module's sections
    from speechbrain_elbo.demo.html_report import render_html

    write_json_atomic(folder / "report.json", report)
    write_text_atomic(folder / "report.md", render_markdown(report) + "\n")
    write_text_atomic(folder / "report.html", render_html(report))


def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, bool | int):
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


def _millions(count):
    return f"{count / 1e6:.2f} M" if count else "?"


# ---------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------
def _data_text(data):
    if not isinstance(data, dict):
        return str(data)
    text = str(data.get("name", "?"))
    items = data.get("items")
    if isinstance(items, dict):
        splits = [s for s in ("train", "valid", "test") if s in items]
        if splits:
            counts = ", ".join(f"{items[s]} {s}" for s in splits)
            text += f" ({counts} items)"
        if "train_minutes" in items:
            text += f", {_fmt(items['train_minutes'], 1)} min of training audio"
    return text


def _budget_text(training):
    parts = []
    for stage, label in (("stage1", "stage 1"), ("stage2", "stage 2")):
        epochs = training.get(f"{stage}_epochs")
        if epochs is None:
            continue
        text = f"{label}: {epochs} epochs"
        steps = training.get(f"{stage}_optimizer_steps")
        if steps is not None:
            text += f", {steps:,} optimizer steps"
        hours = training.get(f"{stage}_wall_time_h")
        if hours is not None:
            text += f", {_fmt(hours, 2)} h"
        parts.append(text)
    return "; ".join(parts)


def card_summary(card):
    """Readable (label, text) lines about a model's training, from its card.

    Reads the fields that the project's model cards use (``data``,
    ``training`` with its epochs, optimizer steps, wall times, hardware and
    software); missing fields are left out, the rest of the card is in
    the full model card.

    Arguments
    ---------
    card : dict
        The ``model_card`` entry of ``model_card.json``.

    Returns
    -------
    list of (str, str)

    Example
    -------
    >>> card = {"data": {"name": "MiniVB", "items": {"train": 602,
    ...     "valid": 60}}, "training": {"stage1_epochs": 45,
    ...     "stage1_optimizer_steps": 6795, "stage1_wall_time_h": 2.41,
    ...     "hardware": "2 CPU cores"}}
    >>> for label, text in card_summary(card):
    ...     print(f"{label}: {text}")
    Training data: MiniVB (602 train, 60 valid items)
    Training budget: stage 1: 45 epochs, 6,795 optimizer steps, 2.41 h
    Training hardware: 2 CPU cores
    """
    lines = []
    if "data" in card:
        lines.append(("Training data", _data_text(card["data"])))
    training = card.get("training")
    if isinstance(training, dict):
        budget = _budget_text(training)
        if budget:
            lines.append(("Training budget", budget))
        for key in ("hardware", "software"):
            if key in training:
                lines.append((f"Training {key}", str(training[key])))
    elif training is not None:
        lines.append(("Training", str(training)))
    return lines


def _model_line(model):
    sizes = [f"score network {_millions(model.get('score_parameters'))}"]
    if model.get("refiner_parameters"):
        sizes.append(f"refiner {_millions(model['refiner_parameters'])}")
    text = f"`{model.get('name', '?')}`, {model.get('stages', '?')} stage(s)"
    if model.get("score_parameters"):
        text += " (" + ", ".join(sizes) + " parameters)"
    card_file = model.get("card_file")
    if card_file:
        text += f"; full model card: [{card_file}]({card_file})"
    return text


def header_entries(report):
    """The header of the report: (label, text) lines, text in inline markdown.

    Arguments
    ---------
    report : dict
        The report; missing sections give no line.

    Returns
    -------
    list of (str, str)

    Example
    -------
    >>> header_entries({"settings": {"sampler": {"name": "euler",
    ...     "steps": 4}, "seed": 0, "device": "cpu", "threads": 1}})
    ... # doctest: +NORMALIZE_WHITESPACE
    [('Sampler', 'euler, 4 steps; seed 0 (item k: seed + k)'),
     ('Hardware of this run', 'cpu, 1 torch thread(s)')]
    """
    data = report.get("data", {})
    entries = []
    model = report.get("model")
    if model:
        entries.append(("Model", _model_line(model)))
        entries += card_summary(model.get("card") or {})
    training = report.get("training")
    if training and not any(e[0] == "Training budget" for e in entries):
        epochs = ", ".join(
            f"{stage} {log['epochs']} epoch(s)"
            for stage, log in training.items()
        )
        entries.append(("Training logs", epochs))
    if data:
        snrs = ", ".join(_fmt(s, 1) for s in data.get("snrs_db", []))
        rt60 = data.get("rt60_range_s")
        rooms = f"{_fmt(rt60[0], 2)}-{_fmt(rt60[1], 2)}" if rt60 else ""
        entries.append(
            (
                "Test data",
                f"`{data.get('dir', '?')}`, {data.get('items', '?')} items, "
                f"{_fmt(data.get('audio_seconds'), 1)} s of audio"
                + (f", SNRs {snrs} dB" if snrs else "")
                + (f", measured RT60 {rooms} s" if rooms else "")
                + f" (sources: {data.get('origin', '?')})",
            )
        )
    settings = report.get("settings", {})
    if settings:
        sampler = settings.get("sampler", {})
        text = f"{sampler.get('name', '?')}, {sampler.get('steps', '?')} steps"
        if sampler.get("name") == "pc":
            text += f", {sampler.get('corrector_steps', '?')} corrector step(s)"
        seed = settings.get("seed", "?")
        entries.append(("Sampler", f"{text}; seed {seed} (item k: seed + k)"))
        entries.append(("Hardware of this run", _hardware_text(settings)))
    timing = report.get("timing", {})
    if timing:
        entries.append(
            (
                "Wall time",
                ", ".join(f"{k} {_fmt(v, 1)} s" for k, v in timing.items()),
            )
        )
    return entries


def _header(report):
    lines = [f"# {TITLE}", ""]
    if report.get("data", {}).get("fallback"):
        lines += [f"> **{FALLBACK_TEXT}**", ""]
    lines += [
        f"- **{label}**: {text}" for label, text in header_entries(report)
    ]
    return lines + [""]


def _hardware_text(settings):
    hardware = settings.get("hardware", {})
    text = (
        f"{settings.get('device', '?')}, {settings.get('threads', '?')} "
        "torch thread(s)"
    )
    if hardware:
        text += (
            f" ({hardware.get('cpu_count', '?')} CPU cores, "
            f"{hardware.get('machine', '?')}; torch "
            f"{hardware.get('torch', '?')})"
        )
    return text


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def _quality(systems, labels):
    dnsmos = any("dnsmos_ovrl" in s for s in systems.values())
    header = ["system", "items", "PESQ-WB", "ESTOI", "SI-SDR (dB)"]
    header += ["NFE", "RTF"]
    if dnsmos:
        header += ["DNSMOS SIG", "DNSMOS BAK", "DNSMOS OVRL"]
    rows = []
    for name in (n for n in SYSTEMS if n in systems):
        stats = systems[name]
        processed = name != "noisy"
        row = [
            labels[name],
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
    return Section(
        "Enhancement quality and cost",
        header,
        rows,
        [
            "Means over the test items (PESQ-WB: ITU-T P.862.2, 1.04-4.64; "
            "ESTOI: 0-1; SI-SDR in dB; higher is better). NFE: score-network "
            "evaluations per utterance (stage 1+2 adds one refiner pass). "
            "RTF: processing time / audio duration."
        ],
    )


def _elbo(elbo, labels):
    header = ["decoder", "-ELBO", "prior", "diffusion", "reconstruction"]
    header += ["std. err.", "decoder variance"]
    variances = elbo.get("decoder_variance", {})
    rows = []
    for name in ("stage1", "stage1+2"):
        terms = elbo.get(name)
        if not terms:
            continue
        keys = ("total", "prior", "diffusion", "reconstruction", "stderr")
        rows.append(
            [labels[name]]
            + [_fmt(terms.get(key), 4) for key in keys]
            + [f"{variances.get(name, 0.0):.3g}"]
        )
    paragraphs = []
    difference = elbo.get("difference")
    if difference:
        verdict = (
            "lower than stage 1's by more than two standard errors"
            if difference["lower_by_two_stderr"]
            else "NOT lower than stage 1's by two standard errors"
        )
        paragraphs.append(
            f"Stage 1+2 minus stage 1: {difference['mean']:+.4f} bits per "
            f"dimension, standard error {difference['stderr']:.4f} over the "
            f"{difference['crops']} crops (paired, same draws): the "
            f"two-stage -ELBO is {verdict}."
        )
    paragraphs += [
        "Decoders: stage 1 uses the Tweedie estimate at t_eps as the mean "
        "of its Gaussian decoder; stage 1+2 uses the refiner applied to that "
        "estimate (refiner.decode, docs/method.md section 7); each row's "
        "variance is in its last column.",
        f"On {elbo.get('items')} test crops of at most "
        f"{_fmt(elbo.get('crop_seconds'), 2)} s; "
        f"{elbo.get('diffusion_samples')} diffusion and "
        f"{elbo.get('reconstruction_samples')} reconstruction samples per "
        "crop, the same random draws for both rows (so prior and diffusion "
        "agree and the rows differ by the reconstruction term). Decoder "
        f"variance: {variances.get('source', '?')}.",
    ]
    return Section(
        "ELBO terms (bits per real dimension, lower is better)",
        header,
        rows,
        paragraphs,
    )


def _ioc(ioc):
    rows = [
        [_fmt(t, 3), _fmt(s, 4), _fmt(v, 3), _fmt(d, 3)]
        for t, s, v, d in zip(
            ioc["t"], ioc["sigma"], ioc["ioc"], ioc["ioc_std"], strict=True
        )
    ]
    return Section(
        "Importance of Condition",
        ["t", "sigma_t", "IoC", "std over items"],
        rows,
        [
            "IoC(t) = |J_y|^2 / (|J_y|^2 + |J_x|^2) of the Tweedie estimate "
            f"on {ioc.get('items')} crops, {ioc.get('probes')} Hutchinson "
            "probe(s) per time: near 1 the model copies the noisy input, "
            "near 0 it follows the diffused state."
        ],
    )


def _per_item(per_item):
    # the condition of each item: MiniVB's SNR, MiniWHAMR's measured RT60
    rooms = any("rt60_s" in item for item in per_item)
    key, title = ("rt60_s", "RT60 (s)") if rooms else ("snr_db", "SNR (dB)")
    header = ["id", "s", title]
    header += [f"{m} {s}" for s in SYSTEMS for m in ("PESQ", "SI-SDR")]
    rows = []
    for item in per_item:
        row = [
            item["id"],
            _fmt(item.get("duration_s"), 1),
            _fmt(item.get(key), 2 if rooms else 1),
        ]
        for name in SYSTEMS:
            scores = item.get(name, {})
            row += [_fmt(scores.get("pesq"), 2), _fmt(scores.get("si_sdr"), 1)]
        rows.append(row)
    return Section("Per item", header, rows, [])


def sections(report):
    """The tables of the report, in the order of the pages.

    The per-item table is the last one; the pages put the figures before
    it.

    Arguments
    ---------
    report : dict
        The report; a section without data is left out.

    Returns
    -------
    list of Section

    Example
    -------
    >>> ioc = {"t": [0.5], "sigma": [0.1], "ioc": [0.8], "ioc_std": [0.0],
    ...        "items": 1, "probes": 1}
    >>> [s.title for s in sections({"ioc": ioc})]
    ['Importance of Condition']
    >>> sections({"ioc": ioc})[0].rows
    [['0.500', '0.1000', '0.800', '0.000']]
    """
    found = []
    if report.get("systems"):
        found.append(_quality(report["systems"], system_labels(report)))
    elbo = report.get("elbo")
    if elbo and elbo.get("stage1"):
        found.append(_elbo(elbo, system_labels(report)))
    ioc = report.get("ioc")
    if ioc and ioc.get("t"):
        found.append(_ioc(ioc))
    if report.get("per_item"):
        found.append(_per_item(report["per_item"]))
    return found


def _markdown(section):
    lines = [f"## {section.title}", ""]
    lines += _table(section.header, section.rows)
    for paragraph in section.paragraphs:
        lines += ["", paragraph]
    return lines + [""]


def render_markdown(report):
    """``report.md``: a readable header, then the report's numbers as tables.

    Arguments
    ---------
    report : dict
        The report made by :func:`speechbrain_elbo.demo.run_demo`; every
        section is optional.

    Returns
    -------
    str
        Markdown text.

    Example
    -------
    >>> text = render_markdown({"notes": ["a note"], "figures":
    ...                         {"ioc": "figures/ioc.png"}})
    >>> print(text.split("## Figures")[1])
    <BLANKLINE>
    <BLANKLINE>
    ![ioc](figures/ioc.png)
    <BLANKLINE>
    ## Notes
    <BLANKLINE>
    - a note
    """
    lines = _header(report)
    tables = sections(report)
    per_item = tables.pop() if report.get("per_item") else None
    for section in tables:
        lines += _markdown(section)
    figures = report.get("figures", {})
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{name}]({path})" for name, path in figures.items()]
        lines.append("")
    if per_item:
        lines += _markdown(per_item)
    notes = report.get("notes", [])
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip("\n")
