"""Word error rate of an offline recogniser on noisy vs enhanced speech.

The recogniser is pocketsphinx with its bundled US English model (no
network). The speech is the English part of the demo data set (MiniVB,
``python -m speechbrain_elbo.minidata vb --out DIR``) that has a
reference transcription: the test items made from the LibriVox recordings of
the Debian package ``pocketsphinx-testdata``, whose transcriptions ship in
the same package (``librivox/transcription``; fetched into the cache of
:mod:`speechbrain_elbo.minidata.packages`). Items without a transcription are
skipped.

Conditions: clean (the recogniser's ceiling on these recordings), noisy,
and, with ``--model``, the enhanced speech of stage 1 and (for a two-stage
model) of both stages, with the given sampler settings.

pocketsphinx is needed by this benchmark only, not by the package::

    pip install pocketsphinx        # then run:
    .venv/bin/python bench/asr_chain.py --data MINIVB [--model MODEL_DIR]

Without pocketsphinx the script says so and exits with status 0.
"""

import argparse
import csv
import pathlib
import re
import sys
import time

import numpy as np

SR = 16000
TRANSCRIPTIONS = {
    "usr/share/pocketsphinx/test/data/librivox/": "librivox/transcription",
}


def load_transcriptions(package_root):
    """{path inside the package: words} for the transcribed recordings."""
    texts = {}
    data = pathlib.Path(package_root) / "usr/share/pocketsphinx/test/data"
    for prefix, name in TRANSCRIPTIONS.items():
        path = data / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
            if match:
                words, stem = match.group(1).split(), match.group(2).strip()
                texts[f"{prefix}{stem}.wav"] = words
    return texts


def word_errors(reference, hypothesis):
    """Levenshtein distance between two word lists.

    >>> word_errors("a b c".split(), "a x c d".split())
    2
    """
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (hyp != word),
                )
            )
        previous = current
    return previous[-1]


class Recogniser:
    """pocketsphinx's default US English decoder on 16 kHz float audio."""

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=SR, loglevel="FATAL")

    def __call__(self, wav):
        wav = np.asarray(wav, dtype=np.float64)
        peak = np.max(np.abs(wav))
        if peak > 1.0:  # keep int16 from wrapping; WER is level-invariant
            wav = wav / peak
        pcm = np.round(wav * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return [] if hyp is None else hyp.hypstr.lower().split()


def items(data_dir, texts):
    """(id, words) of the MiniVB test items with a transcription."""
    rows = []
    with open(pathlib.Path(data_dir) / "metadata" / "test.csv") as handle:
        for row in csv.DictReader(handle):
            package, _, inside = row["source"].partition(":")
            if package != "pocketsphinx-testdata" or inside not in texts:
                continue
            whole = row.get("clip_start") in ("0", None) and row.get(
                "clip_stop"
            ) in ("-1", None)
            if whole:  # a cut clip would not match the transcription
                rows.append((row["id"], texts[inside]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MiniVB folder")
    parser.add_argument("--model", help="exported enhancer folder")
    parser.add_argument("--sampler", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", help="Debian package cache")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    try:
        recognise = Recogniser()
    except ImportError:
        print(
            "pocketsphinx is not installed; this benchmark needs it "
            "(pip install pocketsphinx). Skipping."
        )
        return 0
    from speechbrain_elbo.minidata import fetch_package

    texts = load_transcriptions(
        fetch_package("pocketsphinx-testdata", args.cache_dir)
    )
    selected = items(args.data, texts)
    if not selected:
        print(f"No transcribed English test items in {args.data}. Skipping.")
        return 0
    data = pathlib.Path(args.data)

    def read(folder, name):
        import soundfile as sf

        wav, rate = sf.read(str(data / folder / f"{name}.wav"))
        if rate != SR:
            raise SystemExit(f"{name}: {rate} Hz, expected {SR}")
        return wav

    conditions = {
        "clean": lambda name: read("clean_testset_wav", name),
        "noisy": lambda name: read("noisy_testset_wav", name),
    }
    if args.model:
        import torch

        from speechbrain_elbo.inference import DiffusionEnhancement

        torch.set_num_threads(1)
        enhancer = DiffusionEnhancement.from_hparams(source=args.model)
        options = dict(sampler=args.sampler, steps=args.steps, seed=args.seed)

        def enhance(name, refine):
            path = data / "noisy_testset_wav" / f"{name}.wav"
            out = enhancer.enhance_file(path, use_refiner=refine, **options)
            return out.numpy()

        conditions["enhanced, stage 1"] = lambda n: enhance(n, False)
        if enhancer.has_refiner:
            conditions["enhanced, two stages"] = lambda n: enhance(n, True)
        sampler = enhancer.make_sampler(args.sampler, args.steps)
        print(f"model {args.model}, sampler {sampler}")

    words = sum(len(ref) for _, ref in selected)
    print(f"{len(selected)} utterances, {words} reference words\n")
    print("| condition | WER % | errors / words | seconds |")
    print("|---|---|---|---|")
    for label, load in conditions.items():
        begin = time.perf_counter()
        errors = 0
        for name, reference in selected:
            hypothesis = recognise(load(name))
            errors += word_errors(reference, hypothesis)
            if args.verbose:
                print(f"  {name} [{label}]: {' '.join(hypothesis)}")
        seconds = time.perf_counter() - begin
        print(
            f"| {label} | {100 * errors / words:.1f} | {errors} / {words} "
            f"| {seconds:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
