"""Word error rate of an offline recogniser on noisy and enhanced speech.

What it measures: whether enhancing before recognition helps, and which
settings of :class:`speechbrain_elbo.asr.EnhanceThenTranscribe` (share of
the noisy input mixed back, refiner on or off, sampler steps) do.

**Recogniser.** pocketsphinx with its bundled US English model (no
network), wrapped in :class:`PocketSphinxASR`, an adapter with SpeechBrain's
``transcribe_batch`` so that it also plugs into the chain. It is the
offline stand-in of a SpeechBrain recogniser, needed by this benchmark
only::

    pip install pocketsphinx

**Speech.** Transcribed English recordings never used to train the
bundled model (MiniVB, ``python -m speechbrain_elbo.minidata vb``):

- the prompts of ``asterisk-core-sounds-en-g722`` (female talker) that the
  MiniVB build left out of its training split, as prepared by the MiniVB
  builder (trimmed; short prompts joined into clips of at least 2.5 s).
  Their text is ``core-sounds-en.txt`` of the Debian package
  ``asterisk-core-sounds-en``. A seeded third of the clips is the
  **tuning** split, on which the chain's defaults are chosen; the rest is
  the **verification** split;
- the five LibriVox recordings of ``pocketsphinx-testdata`` (male talker,
  the MiniVB test talker), transcription in the same package: a second
  verification set, never used for tuning.

Each clip is mixed with MiniVB's test noises (the noise files of the MiniVB
test split, or synthetic noise, as :func:`minidata.clips.choose_noise` draws
them) at every SNR of ``--snrs`` by :func:`minidata.signals.mix_at_snr`, the
MiniVB mixing, at a random active level in MiniVB's range.

**Text normalisation** (:func:`normalise_text`, references and hypotheses
alike): lower case; annotations in ``[]``, ``<>`` and ``()`` removed; ``*``
read "star" and ``#`` "pound"; hyphens and slashes split words; single
digits spelled out; other punctuation removed (apostrophes inside words
kept). A prompt whose text has a number of several digits or a digit
inside a word (how it was read is unknown) is left out, with its clip.

**Conditions.** ``clean`` (the clip, no noise), ``noisy``, and enhanced
speech: stage 1 (``s1``) or both stages (``s12``) with ``k`` sampler steps
(``enhance_stages``: the refiner is applied to the same stage-1 sample,
seed 0), with a share ``m`` of the noisy input mixed back
(:func:`speechbrain_elbo.asr.mix_noisy`).

**WER and intervals.** WER = word errors (substitutions, deletions,
insertions; SpeechBrain's ``wer_details_for_batch``) over reference words,
pooled over the utterances of a cell; 95 % interval: percentile bootstrap
over utterances (:func:`bootstrap_wer`). Differences to ``noisy`` get a
paired bootstrap interval (same resampled utterances for both).

**Choice of the defaults** (tuning split only, :func:`choose_setting`):
among the noisy input itself (share 1) and the enhanced settings that are
not significantly worse than it at any SNR (paired interval), the lowest
mean WER over the SNRs.

Outputs are cached in ``--out`` (enhanced waveforms per utterance and
setting, hypotheses per utterance and condition), so a killed run resumes
where it stopped, and a second run only prints the tables.
"""

import argparse
import csv
import gzip
import json
import pathlib
import re
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np

SR = 16000
SNRS = (0.0, 5.0, 10.0, 20.0)
STEPS = (4,)
SHARES = (0.0, 0.3, 0.6)
TUNING_FRACTION = 1 / 3
RESAMPLES = 2000
#: pocketsphinx settings: at most 3000 active HMMs per frame and no second
#: (flat-lexicon) pass, about 3x faster than its defaults on noisy speech,
#: whose cost its defaults do not bound.
DECODER = {"maxhmmpf": 3000, "fwdflat": False}
PROMPT_DIR = "usr/share/asterisk/sounds/en_US_f_Allison/"
PROMPT_TEXT = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
LIBRIVOX_DIR = "usr/share/pocketsphinx/test/data/librivox/"
DIGITS = "zero one two three four five six seven eight nine".split()


# -- text ------------------------------------------------------------------
def normalise_text(text):
    """Words of a transcription or hypothesis, normalised for WER.

    Lower case; ``[...]``, ``<...>`` and ``(...)`` annotations removed;
    ``*`` -> star, ``#`` -> pound; hyphens and slashes split words; single
    digits spelled out; other punctuation removed, apostrophes inside words
    kept.

    Arguments
    ---------
    text : str
        The text.

    Returns
    -------
    list of str or None
        The words; None when the text has a number of several digits or a
        digit inside a word (its reading is unknown).

    Example
    -------
    >>> normalise_text("Press 1, then #. Call-Forward [tone] (beep)")
    ['press', 'one', 'then', 'pound', 'call', 'forward']
    >>> normalise_text("dial 500") is None
    True
    """
    text = re.sub(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)", " ", text.lower())
    text = text.replace("*", " star ").replace("#", " pound ")
    text = re.sub(r"[-/]", " ", text)
    words = []
    for token in text.split():
        token = re.sub(r"[^a-z0-9']", "", token).strip("'")
        if not token:
            continue
        if re.fullmatch(r"\d", token):
            words.append(DIGITS[int(token)])
        elif re.search(r"\d", token):
            return None
        else:
            words.append(token)
    return words


def prompt_texts(package_root):
    """{prompt name (path under the voice folder, no suffix): text}."""
    path = pathlib.Path(package_root) / PROMPT_TEXT
    texts = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            texts[name.strip()] = text.strip()
    return texts


def librivox_texts(package_root):
    """{file name: text} of the LibriVox recordings of pocketsphinx."""
    path = pathlib.Path(package_root) / LIBRIVOX_DIR / "transcription"
    texts = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
        if match:
            texts[f"{match.group(2).strip()}.wav"] = match.group(1)
    return texts


def word_errors(references, hypotheses):
    """Word errors of each (reference, hypothesis) pair of word lists.

    SpeechBrain's edit distance (substitutions + deletions + insertions).

    Example
    -------
    >>> word_errors([["a", "b", "c"], ["x"]], [["a", "x", "c", "d"], []])
    [2, 1]
    """
    from speechbrain.utils.edit_distance import wer_details_for_batch

    keys = list(range(len(references)))
    details = wer_details_for_batch(keys, references, hypotheses)
    return [int(d["num_edits"]) for d in details]


# -- statistics --------------------------------------------------------------
def bootstrap_wer(errors, words, resamples=RESAMPLES, seed=0, base=None):
    """Pooled WER (%) and its 95 % percentile-bootstrap interval.

    The utterances are resampled with replacement ``resamples`` times; the
    WER of a resample is its errors over its reference words
    (:func:`speechbrain_elbo.metrics.bootstrap_interval`). With
    ``base`` (the errors of another condition on the same utterances) the
    statistic is the paired difference ``WER - WER(base)``, the same
    resamples serving both.

    Arguments
    ---------
    errors : sequence of int
        Word errors per utterance.
    words : sequence of int
        Reference words per utterance.
    resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.
    base : sequence of int, optional
        Errors of the condition to subtract, per utterance.

    Returns
    -------
    tuple of float
        (value, low, high) in percent.

    Example
    -------
    >>> wer, low, high = bootstrap_wer([0, 1], [1, 1], resamples=4000)
    >>> wer, low, high
    (50.0, 0.0, 100.0)
    """
    from speechbrain_elbo.metrics import bootstrap_interval

    value, low, high = bootstrap_interval(errors, words, base, resamples, seed)
    return 100 * value, 100 * low, 100 * high


@dataclass(frozen=True)
class Setting:
    """An enhanced condition: stage(s), sampler steps, noisy share."""

    refiner: bool
    steps: int
    share: float

    @property
    def name(self):
        stage = "s12" if self.refiner else "s1"
        return f"{stage} k{self.steps} m{self.share:g}"

    @classmethod
    def parse(cls, name):
        """The setting of ``name`` (``"s1 k4 m0.3"``); None for others."""
        match = re.fullmatch(r"(s1|s12) k(\d+) m([\d.]+)", name)
        if match is None:
            return None
        return cls(
            match.group(1) == "s12", int(match.group(2)), float(match.group(3))
        )

    def describe(self):
        stage = "stages 1+2" if self.refiner else "stage 1"
        return f"{stage}, {self.steps} steps, noisy share {self.share:g}"


def choose_setting(cells, bands):
    """The default chosen on the tuning split.

    Arguments
    ---------
    cells : dict
        ``{condition name: {band: (WER %, low end of the paired interval of
        WER minus the noisy input's)}}``, with ``"noisy"`` and enhanced
        settings (:class:`Setting` names).
    bands : list
        The SNR bands.

    Returns
    -------
    str
        Among ``"noisy"`` and the settings not significantly worse than
        ``noisy`` at any band (the paired interval reaches 0 or below), the
        one with the lowest mean WER over the bands (ties: ``"noisy"``,
        then fewer steps, no refiner, a smaller share).

    Example
    -------
    >>> cells = {"noisy": {0: (80, 0), 20: (40, 0)},
    ...          "s1 k4 m0": {0: (60, -30), 20: (50, 2)},
    ...          "s1 k4 m0.5": {0: (70, -15), 20: (42, -3)}}
    >>> choose_setting(cells, [0, 20])
    's1 k4 m0.5'
    """
    noisy = sum(cells["noisy"][b][0] for b in bands) / len(bands)
    best = ((noisy, 0, False, 0.0), "noisy")
    for name, by_band in cells.items():
        setting = Setting.parse(name)
        if setting is None or any(by_band[b][1] > 0 for b in bands):
            continue
        mean = sum(by_band[b][0] for b in bands) / len(bands)
        key = (mean, setting.steps, setting.refiner, setting.share)
        best = min(best, (key, name))
    return best[1]


# -- utterances --------------------------------------------------------------
@dataclass(frozen=True)
class Utterance:
    """A clip mixed at one SNR (``snr`` None: the clean clip)."""

    uid: str
    split: str
    clip: object
    snr: object
    words: tuple


def utterance_id(clip, snr):
    return clip.uid if snr is None else f"{clip.uid}@{snr:g}dB"


def held_out_clips(bank, data_dir, cache_dir=None):
    """(clip, words, split) of the transcribed clips MiniVB never trained on.

    Allison clips outside MiniVB's training split (and whole, not a part of
    a cut recording) whose prompts all have a usable text; the LibriVox
    clips (split ``"librivox"``). The Allison clips are dealt to
    ``"tuning"`` and ``"verification"`` by a seeded permutation.
    """
    from speechbrain_elbo.minidata import fetch_package

    with open(pathlib.Path(data_dir) / "metadata" / "train.csv") as handle:
        train_clips = {row["clip"] for row in csv.DictReader(handle)}
    by_uid = {clip.uid: clip for clip in bank.speech}
    train_groups = {by_uid[u].group for u in train_clips if u in by_uid}
    sizes = {}
    for clip in bank.speech:
        sizes[clip.group] = sizes.get(clip.group, 0) + 1
    prompts = prompt_texts(fetch_package("asterisk-core-sounds-en", cache_dir))
    books = librivox_texts(fetch_package("pocketsphinx-testdata", cache_dir))
    allison, librivox, dropped = [], [], 0
    for clip in bank.speech:
        if clip.group in train_groups or sizes[clip.group] != 1:
            continue
        if clip.package == "asterisk-core-sounds-en-g722":
            words = []
            for source in clip.source.split("+"):
                name = source.removeprefix(PROMPT_DIR).removesuffix(".g722")
                text = normalise_text(prompts.get(name, "[missing]"))
                if not text:
                    words = None
                    break
                words += text
            if words:
                allison.append((clip, tuple(words)))
            else:
                dropped += 1
        elif clip.source.startswith(LIBRIVOX_DIR):
            text = books.get(clip.source.removeprefix(LIBRIVOX_DIR))
            if text is not None:
                librivox.append((clip, tuple(normalise_text(text))))
    allison.sort(key=lambda item: item[0].uid)
    order = np.random.default_rng(0).permutation(len(allison))
    tuning = set(order[: round(TUNING_FRACTION * len(allison))].tolist())
    clips = [
        (clip, words, "tuning" if i in tuning else "verification")
        for i, (clip, words) in enumerate(allison)
    ]
    clips += [(clip, words, "librivox") for clip, words in librivox]
    return clips, dropped


def mixture(utt, noise, seed):
    """(clean, noisy) float32 arrays of an utterance (MiniVB's mixing)."""
    from speechbrain_elbo.minidata.clips import choose_noise
    from speechbrain_elbo.minidata.signals import mix_at_snr, seeded_rng

    speech = utt.clip.read().astype(np.float64)
    if utt.snr is None:
        return speech.astype(np.float32), None
    rng = seeded_rng(seed, "asr_chain", utt.uid)
    level = rng.uniform(-30.0, -20.0)
    wav, _ = choose_noise(noise, speech.size, rng, 0.2)
    clean, noisy, _ = mix_at_snr(speech, wav, utt.snr, level)
    return clean.astype(np.float32), noisy.astype(np.float32)


# -- recognition -------------------------------------------------------------
class PocketSphinxASR:
    """pocketsphinx as a SpeechBrain-style ASR: ``transcribe_batch``.

    Its default US English model, 16 kHz, search settings
    :data:`DECODER`. Waveforms are sent as 16-bit PCM (scaled down when
    they exceed full scale). Returns ``(words, None)`` like SpeechBrain's
    interfaces.
    """

    class hparams:
        sample_rate = SR

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=SR, loglevel="FATAL", **DECODER)

    def recognise(self, wav):
        """The hypothesis string of one waveform (numpy or tensor)."""
        wav = np.asarray(wav, dtype=np.float64)
        peak = np.max(np.abs(wav)) if wav.size else 0.0
        if peak > 1.0:
            wav = wav / peak
        pcm = np.round(wav * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return "" if hyp is None else hyp.hypstr

    def transcribe_batch(self, wavs, wav_lens):
        words = []
        for wav, rel in zip(wavs, wav_lens, strict=True):
            valid = int(round(float(rel) * wavs.shape[-1]))
            words.append(self.recognise(wav[:valid].cpu().numpy()))
        return words, None


class Worker:
    """Enhances (with an on-disk cache) and recognises one utterance."""

    def __init__(self, model, cache, noise, seed):
        import torch

        torch.set_num_threads(1)
        self.model = model
        self.cache = pathlib.Path(cache)
        self.noise = noise
        self.seed = seed
        self.asr = PocketSphinxASR()
        self._enhancer = None

    @property
    def enhancer(self):
        if self._enhancer is None:
            from speechbrain_elbo.inference import DiffusionEnhancement

            self._enhancer = DiffusionEnhancement.from_hparams(
                source=self.model, run_opts={"device": "cpu"}
            )
        return self._enhancer

    def enhanced(self, utt, noisy, steps):
        """Stage 1 and stages 1+2 with ``steps`` steps (cached)."""
        import torch

        from speechbrain_elbo.fileio import atomic_path

        path = self.cache / f"k{steps}" / f"{utt.uid}.npz"
        if path.is_file():
            with np.load(path) as saved:
                return dict(saved), 0.0
        begin = time.perf_counter()
        out = self.enhancer.enhance_stages(
            torch.from_numpy(noisy), steps=steps, seed=self.seed
        )
        stages = {
            key: out[key].numpy().astype(np.float32)
            for key in ("stage1", "stage1+2")
            if key in out
        }
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, **stages)
        return stages, time.perf_counter() - begin

    def __call__(self, utt, conditions):
        import torch

        from speechbrain_elbo.asr import mix_noisy

        clean, noisy = mixture(utt, self.noise, self.seed)
        results, stages, enhance_seconds = [], {}, 0.0
        for name in conditions:
            if name == "clean":
                wav = clean
            elif name == "noisy":
                wav = noisy
            else:
                setting = Setting.parse(name)
                if setting.steps not in stages:
                    stages[setting.steps], seconds = self.enhanced(
                        utt, noisy, setting.steps
                    )
                    enhance_seconds += seconds
                key = "stage1+2" if setting.refiner else "stage1"
                wav = mix_noisy(
                    torch.from_numpy(stages[setting.steps][key]),
                    torch.from_numpy(noisy),
                    setting.share,
                ).numpy()
            begin = time.perf_counter()
            hyp = self.asr.recognise(wav)
            results.append(
                {
                    "utt": utt.uid,
                    "cond": name,
                    "hyp": hyp,
                    "seconds": round(time.perf_counter() - begin, 3),
                }
            )
        if results:
            results[0]["enhance_seconds"] = round(enhance_seconds, 3)
        return results


_WORKER = None


def _init_worker(*args):
    global _WORKER
    _WORKER = Worker(*args)


def _work(job):
    return _WORKER(*job)


class HypothesisStore:
    """Hypotheses per (utterance, condition) in an append-only JSONL file."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.rows = {}
        self.seconds = {"decode": 0.0, "enhance": 0.0}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a killed run
                self._keep(row)

    def _keep(self, row):
        self.rows[(row["utt"], row["cond"])] = row["hyp"]
        self.seconds["decode"] += row.get("seconds", 0.0)
        self.seconds["enhance"] += row.get("enhance_seconds", 0.0)

    def missing(self, utt, conditions):
        return [c for c in conditions if (utt.uid, c) not in self.rows]

    def add(self, rows):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
                self._keep(row)


def run_jobs(jobs, store, worker_args, processes):
    """Runs the (utterance, conditions) jobs, adding rows to ``store``."""
    from tqdm import tqdm

    jobs = [(u, store.missing(u, c)) for u, c in jobs]
    jobs = [(u, c) for u, c in jobs if c]
    if not jobs:
        return
    bar = tqdm(total=len(jobs), desc="utterances", unit="utt")
    if processes <= 1:
        worker = Worker(*worker_args)
        for job in jobs:
            store.add(worker(*job))
            bar.update()
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with context.Pool(processes, _init_worker, worker_args) as pool:
            for rows in pool.imap_unordered(_work, jobs):
                store.add(rows)
                bar.update()
    bar.close()


# -- scoring -----------------------------------------------------------------
def score(utterances, store, conditions, resamples, base="noisy"):
    """{condition: {band: cell}} for the utterances (all conditions known).

    A cell has ``wer``, ``low``, ``high``, ``words``, ``utterances`` and,
    for conditions other than ``base``, the paired difference ``delta``,
    ``delta_low``, ``delta_high``. The band of a clean utterance is
    ``"clean"``; ``"all"`` pools the bands.
    """
    bands = {}
    for utt in utterances:
        band = "clean" if utt.snr is None else utt.snr
        bands.setdefault(band, []).append(utt)
    noisy_bands = [b for b in bands if b != "clean"]
    if noisy_bands:
        bands["all"] = [u for b in noisy_bands for u in bands[b]]
    table = {}
    for name in conditions:
        table[name] = {}
        for band, utts in bands.items():
            if (band == "clean") != (name == "clean"):
                continue
            refs = [list(u.words) for u in utts]
            hyps = [normalise_text(store.rows[(u.uid, name)]) for u in utts]
            errors = word_errors(refs, [h or [] for h in hyps])
            words = [len(r) for r in refs]
            seed = zlib.crc32(str(band).encode())
            wer, low, high = bootstrap_wer(errors, words, resamples, seed)
            cell = dict(
                wer=wer,
                low=low,
                high=high,
                words=sum(words),
                utterances=len(utts),
                errors=errors,
            )
            if name not in (base, "clean"):
                base_hyps = [
                    normalise_text(store.rows[(u.uid, base)]) or []
                    for u in utts
                ]
                base_errors = word_errors(refs, base_hyps)
                cell["delta"], cell["delta_low"], cell["delta_high"] = (
                    bootstrap_wer(errors, words, resamples, seed, base_errors)
                )
            table[name][band] = cell
    return table


def band_label(band):
    return band if isinstance(band, str) else f"{band:g} dB"


def markdown(table, conditions, labels, bands, delta=False):
    """A Markdown table: a row per condition, a column per band."""
    head = "| condition | " + " | ".join(band_label(b) for b in bands) + " |"
    lines = [head, "|---" * (len(bands) + 1) + "|"]
    for name in conditions:
        cells = []
        for band in bands:
            cell = table[name].get(band)
            if cell is None:
                cells.append("")
            elif delta:
                cells.append(
                    f"{cell['delta']:+.1f} [{cell['delta_low']:+.1f}, "
                    f"{cell['delta_high']:+.1f}]"
                )
            else:
                cells.append(
                    f"{cell['wer']:.1f} [{cell['low']:.1f}, {cell['high']:.1f}]"
                )
        lines.append(
            f"| {labels.get(name, name)} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def describe(name, default=None):
    if name == default:
        return f"**default chain** ({Setting.parse(name).describe()})"
    setting = Setting.parse(name)
    return name if setting is None else setting.describe()


# -- main --------------------------------------------------------------------
def library_default(enhancer_steps):
    """The chain's default setting name (speechbrain_elbo.asr.ASR_DEFAULTS)."""
    from speechbrain_elbo.asr import ASR_DEFAULTS

    steps = ASR_DEFAULTS.get("steps") or enhancer_steps
    refiner = ASR_DEFAULTS.get("use_refiner")
    return Setting(
        bool(True if refiner is None else refiner),
        int(steps),
        float(ASR_DEFAULTS["mix_noisy"]),
    ).name


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the MiniVB folder")
    parser.add_argument("--model", default="minivb-small")
    parser.add_argument("--out", default="results/asr_chain")
    parser.add_argument("--cache-dir", help="Debian package cache")
    parser.add_argument("--snrs", type=float, nargs="+", default=list(SNRS))
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--shares", type=float, nargs="+", default=list(SHARES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--jobs", type=int, default=1, help="processes")
    parser.add_argument(
        "--phase", choices=["tune", "verify", "all"], default="all"
    )
    parser.add_argument(
        "--limit", type=int, help="at most this many clips per split (trial)"
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        print(
            "pocketsphinx is not installed; this benchmark needs it "
            "(pip install pocketsphinx). Skipping."
        )
        return 0
    import importlib.metadata

    from speechbrain_elbo.minidata import load_sources
    from speechbrain_elbo.minidata.signals import seeded_rng
    from speechbrain_elbo.minidata.splits import split_noise

    begin = time.perf_counter()
    settings = json.loads(
        (pathlib.Path(args.data) / "minidata.json").read_text()
    )
    bank = load_sources(args.cache_dir)
    if bank.fallback or bank.fingerprint() != settings["fingerprint"]:
        raise SystemExit(
            f"The sources in the cache differ from those {args.data} was "
            "built from; pass the --cache-dir it was built with."
        )
    noise = split_noise(bank.noise, seeded_rng(settings["seed"], "noise"))
    clips, dropped = held_out_clips(bank, args.data, args.cache_dir)
    if args.limit:
        clips = [
            item
            for split in ("tuning", "verification", "librivox")
            for item in [c for c in clips if c[2] == split][: args.limit]
        ]
    utterances = {"tuning": [], "verification": [], "librivox": []}
    for clip, words, split in clips:
        for snr in [None] + list(args.snrs):
            utterances[split].append(
                Utterance(utterance_id(clip, snr), split, clip, snr, words)
            )
    from speechbrain_elbo.inference import DiffusionEnhancement

    model_steps = (
        DiffusionEnhancement.from_hparams(
            source=args.model, run_opts={"device": "cpu"}
        )
        .make_sampler()
        .steps
    )
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", pathlib.Path(args.model).name)
    out = pathlib.Path(args.out)
    store = HypothesisStore(out / f"hypotheses-{tag}-seed{args.seed}.jsonl")
    worker_args = (
        args.model,
        out / "enhanced" / tag / f"seed{args.seed}",
        noise["test"],
        args.seed,
    )
    bands = list(args.snrs) + ["all"]
    version = importlib.metadata.version("pocketsphinx")
    words = {
        s: sum(len(u.words) for u in us if u.snr is None)
        for s, us in utterances.items()
    }
    print(
        f"pocketsphinx {version}; model {args.model} (default {model_steps} "
        f"steps); SNRs {', '.join(f'{s:g}' for s in args.snrs)} dB; "
        f"{len(noise['test'])} MiniVB test noise files (+ synthetic)"
    )
    for split, utts in utterances.items():
        n = sum(u.snr is None for u in utts)
        print(
            f"{split}: {n} clips, {words[split]} words per SNR, "
            f"{len(utts) - n} noisy utterances"
        )
    print(f"({dropped} clips left out: a prompt text with an unknown reading)")

    grid = [
        Setting(refiner, steps, share).name
        for steps in args.steps
        for refiner in (False, True)
        for share in args.shares
    ]
    tuning = ["clean", "noisy"] + grid
    report = {}
    jobs = [
        (u, ["clean"] if u.snr is None else tuning[1:])
        for u in utterances["tuning"]
    ]
    run_jobs(jobs, store, worker_args, args.jobs)
    table = score(utterances["tuning"], store, tuning, args.resamples)
    cells = {
        n: {
            b: (table[n][b]["wer"], table[n][b].get("delta_low", 0.0))
            for b in args.snrs
        }
        for n in tuning[1:]
    }
    chosen = choose_setting(cells, list(args.snrs))
    default = library_default(model_steps)
    labels = {n: describe(n) for n in tuning}
    print("\n## Tuning split: WER % [95 % interval]\n")
    print(markdown(table, tuning, labels, ["clean"] + bands))
    print(f"\nChosen on the tuning split: {describe(chosen)}")
    print(
        f"The chain's default (speechbrain_elbo.asr.ASR_DEFAULTS): "
        f"{describe(default)}"
    )
    if chosen != default:
        print("WARNING: the chain's default is not the setting chosen here.")
    report["tuning"] = {"chosen": chosen, "default": default, "table": table}
    if args.phase != "tune":
        plain = [
            Setting(False, model_steps, 0.0).name,
            Setting(True, model_steps, 0.0).name,
        ]
        verify = ["clean", "noisy"] + plain
        # the default and the setting chosen, once each (often the same)
        verify = list(dict.fromkeys([*verify, default, chosen]))
        labels[default] = describe(default, default)
        for split in ("verification", "librivox"):
            jobs = [
                (u, ["clean"] if u.snr is None else verify[1:])
                for u in utterances[split]
            ]
            run_jobs(jobs, store, worker_args, args.jobs)
            table = score(utterances[split], store, verify, args.resamples)
            print(f"\n## {split.capitalize()} split: WER % [95 % interval]\n")
            print(markdown(table, verify, labels, ["clean"] + bands))
            print(
                f"\n{split.capitalize()}: WER minus the noisy input's "
                "(paired 95 % interval)\n"
            )
            print(markdown(table, verify[2:], labels, bands, delta=True))
            worse = [
                band_label(b)
                for b in args.snrs
                if table[default][b]["delta_low"] > 0
            ]
            print(
                "\nDefault chain significantly worse than noisy at: "
                + (", ".join(worse) if worse else "no SNR")
            )
            report[split] = {"table": table}
    for part in report.values():
        for row in part["table"].values():
            for cell in row.values():
                cell.pop("errors", None)
    from speechbrain_elbo.fileio import write_json_atomic

    report["settings"] = {
        **vars(args),
        "pocketsphinx": version,
        "model_steps": model_steps,
    }
    report["seconds"] = {
        **store.seconds,
        "this_run": time.perf_counter() - begin,
    }
    write_json_atomic(
        out / f"report-{tag}-seed{args.seed}.json",
        json.loads(json.dumps(report, default=str)),
    )
    print(
        f"\nCPU work cached so far: decoding {store.seconds['decode']:.0f} s, "
        f"enhancement {store.seconds['enhance']:.0f} s; this run "
        f"{time.perf_counter() - begin:.0f} s wall."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
