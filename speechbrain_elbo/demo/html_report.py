"""The demo's ``report.html``: the report's tables, figures and audio.

One self-contained page, rendered with the standard library only
(:func:`html.escape` and string building): inline CSS, no script, no
network; the figures and the audio are relative links into the demo
folder (``figures/``, ``enhanced/``, ``listen/``), so the folder can be
moved or shared as it is and the page opened from disk or any static file
server.

It shows what ``report.md`` shows, from the same data
(:func:`speechbrain_elbo.demo.report.header_entries` and
:func:`~speechbrain_elbo.demo.report.sections`), and adds audio players:
for the items of the report's ``listening`` entry (the best, median and
worst gain of the last stage, chosen by :mod:`speechbrain_elbo.demo.run`),
the noisy input, stage 1, stage 1+2 and the clean reference beside their
spectrograms.

Example
-------
>>> page = render_html({"systems": {"noisy": {"pesq": 1.5, "estoi": 0.7,
...     "si_sdr": 8.0, "count": 2}}, "notes": ["a <note>"]})
>>> page.startswith("<!DOCTYPE html>")
True
>>> "<td>noisy input</td><td>2</td><td>1.500</td>" in page
True
>>> "<li>a &lt;note&gt;</li>" in page
True
"""

import html
import re

from speechbrain_elbo.demo.report import (
    FALLBACK_TEXT,
    TITLE,
    _fmt,
    header_entries,
    sections,
    system_labels,
)

__all__ = ["LISTEN_VERSIONS", "inline_html", "render_html"]

#: The versions of an item that the players offer, in their order.
LISTEN_VERSIONS = ("noisy", "stage1", "stage1+2", "clean")

#: Names of the metrics that choose the items to listen to.
METRIC_LABELS = {"pesq": "PESQ-WB", "estoi": "ESTOI", "si_sdr": "SI-SDR"}

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 96rem;
       margin: 1.5rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
p.note { color: #444; font-size: 0.9rem; max-width: 60rem; }
.warning { background: #fee; border: 2px solid #c00; padding: 0.5rem; }
.item { border-top: 1px solid #ddd; padding: 0.5rem 0; }
.listen { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; }
.listen audio { width: 15rem; }
.listen img { flex: 1 1 24rem; min-width: 0; max-width: 900px; }
img { max-width: 100%; height: auto; }
figure { margin: 1rem 0; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def inline_html(text):
    """The report's inline markdown (code, bold, links) as escaped HTML.

    Arguments
    ---------
    text : str
        Text of a header line, cell or paragraph of the report.

    Returns
    -------
    str

    Example
    -------
    >>> inline_html("`tiny` <b>; [model/card.md](model/card.md)")
    '<code>tiny</code> &lt;b&gt;; <a href="model/card.md">model/card.md</a>'
    """
    text = html.escape(str(text), quote=True)
    text = _CODE.sub(r"<code>\1</code>", text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    return _LINK.sub(r'<a href="\2">\1</a>', text)


def _table(header, rows, caption=None):
    lines = ["<table>"]
    if caption:
        lines.append(f"<caption>{inline_html(caption)}</caption>")
    cells = "".join(f"<th>{inline_html(h)}</th>" for h in header)
    lines.append(f"<thead><tr>{cells}</tr></thead><tbody>")
    for row in rows:
        cells = "".join(f"<td>{inline_html(c)}</td>" for c in row)
        lines.append(f"<tr>{cells}</tr>")
    return lines + ["</tbody></table>"]


def _section(section):
    slug = re.sub(r"[^a-z0-9]+", "-", section.title.lower()).strip("-")
    lines = [f'<section id="{slug}">', f"<h2>{inline_html(section.title)}</h2>"]
    lines += _table(section.header, section.rows)
    lines += [
        f'<p class="note">{inline_html(p)}</p>' for p in section.paragraphs
    ]
    return lines + ["</section>"]


def _rank_title(ranks, metric, system, labels):
    if ranks == ["first"]:
        return f"First item (no finite {metric} gain)"
    if len(ranks) > 1:
        ranks = [", ".join(ranks[:-1]), ranks[-1]]
    named = " and ".join(ranks)
    return (
        f"{named[:1].upper()}{named[1:]} {metric} gain of "
        f"{labels.get(system, system)}"
    )


def _listen_item(entry, record, metric, system, labels):
    key = metric
    metric = METRIC_LABELS.get(key, key)
    ranks = list(entry["ranks"])
    title = _rank_title(ranks, metric, system, labels)
    details = []
    if ranks != ["first"]:
        details.append(f"{entry['gain']:+.2f} {metric} over the input")
    if record.get("snr_db") is not None:
        details.append(f"SNR {_fmt(record['snr_db'], 1)} dB")
    if record.get("rt60_s") is not None:
        details.append(f"RT60 {_fmt(record['rt60_s'], 2)} s")
    if record.get("duration_s") is not None:
        details.append(f"{_fmt(record['duration_s'], 1)} s")
    ident = html.escape(str(entry["id"]), quote=True)
    lines = [
        f'<section class="item" id="item-{ident}">',
        f"<h3>{inline_html(title)}: <code>{ident}</code> "
        f"({inline_html(', '.join(details))})</h3>",
        '<div class="listen">',
        "<table>",
        "<thead><tr><th>version</th><th>PESQ-WB</th><th>SI-SDR (dB)</th>"
        "<th>listen</th></tr></thead><tbody>",
    ]
    for name in LISTEN_VERSIONS:
        path = entry["audio"].get(name)
        if not path:
            continue
        scores = record.get(name, {})
        label = html.escape(labels[name])
        player = (
            f'<audio controls preload="metadata" '
            f'src="{html.escape(path, quote=True)}" '
            f'title="{label}"></audio>'
        )
        lines.append(
            f"<tr><td>{label}</td><td>{_fmt(scores.get('pesq'), 2)}</td>"
            f"<td>{_fmt(scores.get('si_sdr'), 2)}</td><td>{player}</td></tr>"
        )
    lines += ["</tbody></table>"]
    if entry.get("spectrogram"):
        lines.append(
            f'<img src="{html.escape(entry["spectrogram"], quote=True)}" '
            f'alt="spectrograms of {ident}: '
            f'{", ".join(LISTEN_VERSIONS)}" width="900">'
        )
    return lines + ["</div>", "</section>"]


def _listening(report):
    listening = report.get("listening")
    if not listening or not listening.get("items"):
        return []
    metric = listening.get("metric", "pesq")
    system = listening.get("system", "stage1+2")
    records = {r["id"]: r for r in report.get("per_item", [])}
    labels = system_labels(report)
    lines = [
        '<section id="listen">',
        "<h2>Listen</h2>",
        '<p class="note">'
        + inline_html(
            f"The items with the best, median and worst "
            f"{METRIC_LABELS.get(metric, metric)} gain of "
            f"{labels.get(system, system)} over the {labels['noisy']} "
            "(scores from the per-item table); the spectrograms show the "
            "versions top to bottom in the order of the players, on one "
            "colour scale."
        )
        + "</p>",
    ]
    for entry in listening["items"]:
        record = records.get(entry["id"], {})
        lines += _listen_item(entry, record, metric, system, labels)
    return lines + ["</section>"]


def _figures(report):
    figures = report.get("figures", {})
    if not figures:
        return []
    lines = ['<section id="figures">', "<h2>Figures</h2>"]
    for name, path in figures.items():
        src = html.escape(path, quote=True)
        caption = html.escape(name)
        lines.append(
            f'<figure><img src="{src}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return lines + ["</section>"]


def render_html(report):
    """``report.html``: the header, tables, figures and audio players.

    Arguments
    ---------
    report : dict
        The report made by :func:`speechbrain_elbo.demo.run_demo`; every
        section is optional.

    Returns
    -------
    str
        A complete HTML5 page (no script; relative links only).

    Example
    -------
    >>> page = render_html({"figures": {"ioc": "figures/ioc.png"}})
    >>> '<img src="figures/ioc.png" alt="ioc">' in page
    True
    >>> "<script" in page
    False
    """
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # no favicon request
        '<link rel="icon" href="data:,">',
        f"<title>{html.escape(TITLE)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(TITLE)}</h1>",
    ]
    if report.get("data", {}).get("fallback"):
        lines.append(
            f'<p class="warning"><strong>{html.escape(FALLBACK_TEXT)}'
            "</strong></p>"
        )
    entries = header_entries(report)
    if entries:
        lines.append('<ul id="header">')
        lines += [
            f"<li><strong>{inline_html(label)}</strong>: {inline_html(text)}"
            "</li>"
            for label, text in entries
        ]
        lines.append("</ul>")
    tables = sections(report)
    per_item = tables.pop() if report.get("per_item") else None
    if tables and report.get("systems"):
        lines += _section(tables.pop(0))
    lines += _listening(report)
    for section in tables:
        lines += _section(section)
    lines += _figures(report)
    if per_item:
        lines += _section(per_item)
    notes = report.get("notes", [])
    if notes:
        lines += ['<section id="notes">', "<h2>Notes</h2>", "<ul>"]
        lines += [f"<li>{inline_html(note)}</li>" for note in notes]
        lines += ["</ul>", "</section>"]
    lines += ["</body>", "</html>"]
    return "\n".join(lines) + "\n"
