"""The demo's figures, and the training logs they plot.

- :func:`plot_spectrograms`, :func:`plot_ioc`, :func:`plot_training`: PNG
  figures drawn with matplotlib's non-interactive ``Agg`` backend and
  written atomically (:func:`speechbrain_elbo.fileio.atomic_path`);
- :func:`parse_train_log`: the epochs of a SpeechBrain ``FileTrainLogger``
  file (``train_log.txt``), for the training curves.

matplotlib is needed for the figures only (:func:`have_matplotlib`);
without it the demo skips them with a note in the report.

Example
-------
>>> line = ("epoch: 3, lr: 1.00e-04 - train loss: 1.26e-01, train batches: "
...         "[16, 16] - valid loss: 3.26e-01, valid pesq: 1.02")
>>> parse_train_log_lines([line])  # doctest: +NORMALIZE_WHITESPACE
[{'epoch': 3, 'lr': 0.0001, 'train loss': 0.126,
  'train batches': [16.0, 16.0], 'valid loss': 0.326, 'valid pesq': 1.02}]
"""

import pathlib
import re

import torch

from speechbrain_elbo.fileio import atomic_path

__all__ = [
    "parse_train_log",
    "parse_train_log_lines",
    "have_matplotlib",
    "plot_spectrograms",
    "plot_ioc",
    "plot_training",
    "log_spectrogram",
]

_ENTRY = re.compile(r"\s*([A-Za-z_][\w ]*?):\s*(\[[^\]]*\]|[^,]+)\s*(?:,|$)")


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
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        _pyplot().close(fig)
    return pathlib.Path(path)


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
