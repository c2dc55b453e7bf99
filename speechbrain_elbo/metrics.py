"""Speech enhancement metrics: PESQ-WB, ESTOI and SI-SDR.

PESQ-WB comes from the ``pesq`` package (ITU-T P.862.2), ESTOI from
``pystoi`` (extended STOI), SI-SDR is computed here in torch (zero-mean
signals, scale-invariant projection). :class:`EnhancementMetrics` gathers the
three through SpeechBrain's ``MetricStats`` for a set of utterances, with
NaN-aware averages (PESQ can fail on an utterance without speech), and merges
the per-utterance scores of several DDP processes. :func:`metric_bins`
averages per-utterance scores within bins of a per-utterance condition (e.g.
the measured RT60 or DRR of a test room), to show where a system fails.
:func:`bootstrap_interval` gives a 95 % interval for a mean, a pooled ratio
(e.g. a WER) or a paired difference of per-utterance values.

Example
-------
>>> import math
>>> t = torch.arange(16000) / 16000
>>> clean = torch.sin(1382 * t) * torch.sin(13 * t)
>>> g = torch.Generator().manual_seed(0)
>>> noisy = clean + 0.1 * torch.randn(16000, generator=g)
>>> round(si_sdr(noisy, clean).item(), 1)
13.8
"""

import math

import numpy as np
import torch
from speechbrain.utils.distributed import is_distributed_initialized
from speechbrain.utils.logger import get_logger
from speechbrain.utils.metric_stats import MetricStats

logger = get_logger(__name__)

__all__ = [
    "si_sdr",
    "pesq_wb",
    "estoi",
    "METRICS",
    "EnhancementMetrics",
    "nan_mean",
    "bootstrap_interval",
    "gather_objects",
    "metric_bins",
    "BIN_FIELDS",
]


def _as_batch(signal, name):
    signal = torch.as_tensor(signal)
    if signal.is_complex():
        raise ValueError(f"{name} must be a real waveform, got complex.")
    if signal.dim() == 1:
        signal = signal.unsqueeze(0)
    if signal.dim() != 2:
        raise ValueError(
            f"{name} must have shape (samples,) or (batch, samples), got "
            f"{tuple(signal.shape)}."
        )
    return signal.float()


def _valid_samples(lengths, num_samples, batch):
    if lengths is None:
        return [num_samples] * batch
    return torch.round(lengths.float() * num_samples).long().tolist()


def si_sdr(estimate, reference, lengths=None, zero_mean=True, eps=1e-8):
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al.).

    SI-SDR = 10 log10(|a s|^2 / |a s - s_hat|^2) with a = <s_hat, s>/|s|^2,
    after removing the mean of both signals (``zero_mean``).

    Arguments
    ---------
    estimate : torch.Tensor
        Enhanced waveforms, (samples,) or (batch, samples).
    reference : torch.Tensor
        Clean waveforms, same shape.
    lengths : torch.Tensor, optional
        Relative lengths (batch,) of a padded batch: only the valid samples
        count.
    zero_mean : bool
        Remove the mean of both signals first.
    eps : float
        Guards the divisions.

    Returns
    -------
    torch.Tensor
        SI-SDR per utterance, shape (batch,).

    Example
    -------
    >>> ref = torch.tensor([[1.0, -1.0, 2.0, -2.0]])
    >>> bool(si_sdr(3.0 * ref, ref) > 90)  # a rescaled copy is perfect
    True
    >>> si_sdr(ref + torch.tensor([[0.5, 0.5, -0.5, -0.5]]), ref)
    tensor([10.])
    """
    estimate = _as_batch(estimate, "estimate")
    reference = _as_batch(reference, "reference")
    if estimate.shape != reference.shape:
        raise ValueError(
            f"estimate and reference differ in shape: {tuple(estimate.shape)}"
            f" vs {tuple(reference.shape)}."
        )
    batch, num_samples = estimate.shape
    mask = torch.ones_like(estimate)
    if lengths is not None:
        valid = torch.tensor(_valid_samples(lengths, num_samples, batch))
        mask = (torch.arange(num_samples) < valid.unsqueeze(1)).float()
        mask = mask.to(estimate.device)
    count = mask.sum(-1, keepdim=True).clamp_min(1.0)
    if zero_mean:
        estimate = estimate - (estimate * mask).sum(-1, keepdim=True) / count
        reference = reference - (reference * mask).sum(-1, keepdim=True) / count
    estimate, reference = estimate * mask, reference * mask
    scale = (estimate * reference).sum(-1, keepdim=True) / (
        reference.pow(2).sum(-1, keepdim=True) + eps
    )
    target = scale * reference
    noise = target - estimate
    ratio = (target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return 10.0 * torch.log10(ratio)


def _numpy(signal):
    return torch.as_tensor(signal).detach().float().cpu().numpy()


def pesq_wb(estimate, reference, sample_rate=16000):
    """Wide-band PESQ (P.862.2) of one utterance, from the ``pesq`` package.

    Arguments
    ---------
    estimate : torch.Tensor or numpy.ndarray
        Enhanced waveform (samples,).
    reference : torch.Tensor or numpy.ndarray
        Clean waveform (samples,).
    sample_rate : int
        Must be 16000 (wide-band PESQ is defined at 16 kHz).

    Returns
    -------
    float
        MOS-LQO in [1.04, 4.64], or NaN (with a warning) when PESQ finds no
        utterance in the reference, e.g. on silence.

    Example
    -------
    >>> t = torch.arange(16000) / 16000
    >>> clean = torch.sin(1382 * t) * torch.sin(19 * t)
    >>> pesq_wb(clean, clean) > 4.5
    True
    >>> math.isnan(pesq_wb(clean, torch.zeros(16000)))
    True
    """
    from pesq import PesqError, pesq

    if sample_rate != 16000:
        raise ValueError(
            f"Wide-band PESQ needs 16 kHz audio, got {sample_rate} Hz; "
            "resample with torchaudio.functional.resample first."
        )
    estimate, reference = _numpy(estimate), _numpy(reference)
    if estimate.shape != reference.shape or estimate.ndim != 1:
        raise ValueError(
            "pesq_wb takes two 1-D waveforms of equal length, got shapes "
            f"{estimate.shape} and {reference.shape}."
        )
    if not np.any(reference) or not np.any(estimate):
        logger.warning("PESQ of a silent signal is undefined; it scores NaN.")
        return float("nan")
    try:
        return float(pesq(sample_rate, reference, estimate, "wb"))
    except PesqError as err:
        logger.warning(f"PESQ failed ({err}); the utterance scores NaN.")
        return float("nan")


def estoi(estimate, reference, sample_rate=16000):
    """Extended STOI (Jensen and Taal, 2016) of one utterance, via ``pystoi``.

    Arguments
    ---------
    estimate : torch.Tensor or numpy.ndarray
        Enhanced waveform (samples,).
    reference : torch.Tensor or numpy.ndarray
        Clean waveform (samples,).
    sample_rate : int
        Sample rate of both (pystoi resamples to 10 kHz internally).

    Returns
    -------
    float
        ESTOI, about in [0, 1].

    Example
    -------
    >>> t = torch.arange(16000) / 16000
    >>> clean = torch.sin(1382 * t) * torch.sin(19 * t)
    >>> round(estoi(clean, clean), 3)
    1.0
    """
    from pystoi import stoi

    estimate, reference = _numpy(estimate), _numpy(reference)
    if estimate.shape != reference.shape or estimate.ndim != 1:
        raise ValueError(
            "estoi takes two 1-D waveforms of equal length, got shapes "
            f"{estimate.shape} and {reference.shape}."
        )
    return float(stoi(reference, estimate, sample_rate, extended=True))


#: Metric name -> function(estimate, reference, sample_rate) -> float.
METRICS = {
    "pesq": pesq_wb,
    "estoi": estoi,
    "si_sdr": lambda est, ref, sr: float(si_sdr(est, ref)[0]),
}


def nan_mean(values):
    """Mean of the finite values (NaN when there is none).

    Example
    -------
    >>> nan_mean([1.0, float("nan"), 3.0])
    2.0
    >>> import math; math.isnan(nan_mean([]))
    True
    """
    finite = [float(v) for v in values if math.isfinite(float(v))]
    if not finite:
        return float("nan")
    return float(np.mean(finite))


def bootstrap_interval(values, weights=None, base=None, resamples=2000, seed=0):
    """``sum(values - base) / sum(weights)`` and its 95 % percentile-bootstrap
    interval over the items.

    The items are resampled with replacement ``resamples`` times and the
    statistic is computed on each resample. Without ``weights`` it is the
    mean; with them a pooled ratio (word errors over reference words is the
    WER). With ``base`` (the values of another system on the same items) it
    is the paired difference: the same resamples serve both, so what the
    two share (an item's difficulty) cancels.

    Arguments
    ---------
    values : sequence of float
        One value per item.
    weights : sequence of float, optional
        One denominator per item, a count such as reference words (default
        1 each: the mean). A resample whose weights sum to less than 1 is
        divided by 1.
    base : sequence of float, optional
        The values to subtract, one per item.
    resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    tuple of float
        (statistic, low, high).

    Example
    -------
    >>> bootstrap_interval([2.0, 3.0, 4.0], base=[1.0, 2.0, 3.0])
    (1.0, 1.0, 1.0)
    >>> bootstrap_interval([3, 0], weights=[10, 2])[0]
    0.25
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("bootstrap_interval: give one value per item.")
    weights = (
        np.ones_like(values)
        if weights is None
        else np.asarray(weights, dtype=np.float64)
    )
    base = np.zeros_like(values) if base is None else np.asarray(base, float)
    if weights.shape != values.shape or base.shape != values.shape:
        raise ValueError(
            "bootstrap_interval: give one weight and one base value per item."
        )
    values = values - base
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))
    stats = values[picks].sum(1) / np.maximum(weights[picks].sum(1), 1.0)
    statistic = values.sum() / max(weights.sum(), 1.0)
    low, high = np.percentile(stats, [2.5, 97.5])
    return float(statistic), float(low), float(high)


def gather_objects(obj):
    """Every DDP process's ``obj`` as a list (rank order); ``[obj]`` alone.

    Example
    -------
    >>> gather_objects({"a": 1})
    [{'a': 1}]
    """
    if not is_distributed_initialized():
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


class EnhancementMetrics:
    """PESQ-WB, ESTOI and SI-SDR of a set of utterances, via ``MetricStats``.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the waveforms.
    metrics : sequence of str
        Names among :data:`METRICS`.

    Example
    -------
    >>> t = torch.arange(16000) / 16000
    >>> clean = torch.sin(1382 * t) * torch.sin(19 * t)
    >>> stats = EnhancementMetrics(metrics=("si_sdr",))
    >>> stats.append(["a", "b"], torch.stack([clean, 2 * clean]),
    ...              torch.stack([clean, clean]))
    >>> stats.summarize()["si_sdr"] > 70
    True
    >>> sorted(stats.per_utterance())
    ['a', 'b']
    """

    def __init__(self, sample_rate=16000, metrics=("pesq", "estoi", "si_sdr")):
        unknown = [name for name in metrics if name not in METRICS]
        if unknown:
            raise ValueError(
                f"Unknown metric(s) {unknown}; choose among {sorted(METRICS)}."
            )
        self.sample_rate = sample_rate
        self.names = tuple(metrics)
        self.stats = {
            name: MetricStats(
                metric=self._metric_fn(METRICS[name]), batch_eval=False
            )
            for name in self.names
        }

    def _metric_fn(self, function):
        sample_rate = self.sample_rate

        def metric(predict, target):
            return function(predict, target, sample_rate)

        return metric

    def append(self, ids, estimates, references, lengths=None):
        """Score a batch of enhanced waveforms against their references.

        Arguments
        ---------
        ids : list of str
            Utterance ids.
        estimates : torch.Tensor
            Enhanced waveforms (batch, samples).
        references : torch.Tensor
            Clean waveforms (batch, samples).
        lengths : torch.Tensor, optional
            Relative lengths (batch,) of a padded batch.
        """
        estimates = _as_batch(estimates, "estimates").detach().cpu()
        references = _as_batch(references, "references").detach().cpu()
        if lengths is not None:
            lengths = lengths.detach().cpu()
        for stats in self.stats.values():
            stats.append(
                ids, predict=estimates, target=references, lengths=lengths
            )

    def per_utterance(self):
        """Dict id -> {metric: score} of everything appended (or merged)."""
        table = {}
        for name, stats in self.stats.items():
            for uid, score in zip(stats.ids, stats.scores, strict=True):
                table.setdefault(uid, {})[name] = float(score)
        return table

    def merge_ranks(self):
        """Gather the scores of all DDP processes into every process.

        Utterances scored by several processes (a distributed sampler pads
        the last batch with repeats) count once.
        """
        merged = {}
        for table in gather_objects(self.per_utterance()):
            merged.update(table)
        for name, stats in self.stats.items():
            stats.clear()
            ids = sorted(merged)
            stats.ids = ids
            stats.scores = [merged[uid][name] for uid in ids]

    def __len__(self):
        first = next(iter(self.stats.values()))
        return len(first.ids)

    def summarize(self):
        """NaN-aware mean of each metric, plus ``count`` and failures.

        Returns
        -------
        dict
            ``{metric: mean, ..., "count": n, "<metric>_failed": k}``
            where k counts NaN scores (left out of the mean).
        """
        summary = {"count": len(self)}
        for name, stats in self.stats.items():
            scores = [float(s) for s in stats.scores]
            summary[name] = nan_mean(scores)
            failed = sum(1 for s in scores if not math.isfinite(s))
            if failed:
                summary[f"{name}_failed"] = failed
        return summary


#: Columns of the rows returned by :func:`metric_bins`.
BIN_FIELDS = [
    "system",
    "field",
    "bin",
    "low",
    "high",
    "utterances",
    "pesq",
    "estoi",
    "si_sdr",
]


def _check_edges(field, edges):
    try:
        edges = [float(edge) for edge in edges]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Bin edges of {field!r} must be a list of numbers, got {edges!r}."
        ) from err
    if not edges or not all(math.isfinite(edge) for edge in edges):
        raise ValueError(
            f"Bin edges of {field!r} must be a non-empty list of finite "
            f"numbers, got {edges}."
        )
    if any(np.diff(edges) <= 0):
        raise ValueError(
            f"Bin edges of {field!r} must increase strictly, got {edges}."
        )
    return edges


def metric_bins(
    records,
    field,
    edges,
    metrics=("pesq", "estoi", "si_sdr"),
    group="system",
):
    """Per-bin means of per-utterance scores, for each system.

    The utterances are put into bins of ``field`` (e.g. the measured RT60 of
    their room): ``[edges[i], edges[i + 1])`` for each pair of neighbouring
    edges, plus ``< edges[0]`` and ``>= edges[-1]`` for the values outside,
    which are listed only when they hold utterances. Inside a bin each
    metric is averaged over its finite scores (:func:`nan_mean`).

    Arguments
    ---------
    records : iterable of dict
        One per (utterance, system): the system name under ``group``, the
        condition under ``field`` and the scores under ``metrics``. Records
        whose ``field`` is missing, None or NaN are left out.
    field : str
        The per-utterance condition to bin by.
    edges : sequence of float
        Strictly increasing bin edges (at least one).
    metrics : sequence of str
        The scores to average.
    group : str
        The key that names the system of a record.

    Returns
    -------
    list of dict
        Rows with :data:`BIN_FIELDS` keys (``low``/``high`` None for the
        open bins), systems in order of first appearance, then bins in
        increasing order; empty when no record has ``field``.

    Example
    -------
    >>> records = [
    ...     {"system": "noisy", "rt60": 0.3, "pesq": 2.0},
    ...     {"system": "noisy", "rt60": 0.35, "pesq": 3.0},
    ...     {"system": "noisy", "rt60": 1.2, "pesq": 1.0},
    ... ]
    >>> for row in metric_bins(records, "rt60", [0.2, 0.6, 1.0], ["pesq"]):
    ...     print(row["bin"], row["utterances"], row["pesq"])
    [0.2, 0.6) 2 2.5
    [0.6, 1) 0 nan
    >= 1 1 1.0
    """
    edges = _check_edges(field, edges)
    kept = []
    for record in records:
        value = record.get(field)
        if value is None:
            continue
        value = float(value)
        if math.isnan(value):
            continue
        kept.append((record[group], value, record))
    if not kept:
        return []
    # bin 0: below the first edge; bin i: [edges[i - 1], edges[i])
    values = np.array([value for _, value, _ in kept])
    indices = np.searchsorted(np.array(edges), values, side="right")
    bounds = [None, *edges, None]
    groups = {}
    for (system, _, record), index in zip(kept, indices, strict=True):
        groups.setdefault(system, {}).setdefault(int(index), []).append(record)
    rows = []
    for system, by_bin in groups.items():
        for index in range(len(edges) + 1):
            members = by_bin.get(index, [])
            outer = index == 0 or index == len(edges)
            if outer and not members:
                continue
            low, high = bounds[index], bounds[index + 1]
            if low is None:
                label = f"< {high:g}"
            elif high is None:
                label = f">= {low:g}"
            else:
                label = f"[{low:g}, {high:g})"
            row = {
                "system": system,
                "field": field,
                "bin": label,
                "low": low,
                "high": high,
                "utterances": len(members),
            }
            for name in metrics:
                row[name] = nan_mean(
                    [r[name] for r in members if r.get(name) is not None]
                )
            rows.append(row)
    return rows
