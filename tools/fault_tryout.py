"""Try the command line as a new user would, on inputs it never saw.

Generates, from the package's speech and noise samples, the inputs of
docs/inference.md ("Reliability"): a clipped file, a very loud float file,
a DC offset, a 5 ms file, 8/22.05/44.1/48 kHz files, 24-bit and float
files, mono and stereo, a folder with a non-audio file among its wavs,
and (with ``--hour``) one hour of noisy speech. Each case runs
``speechbrain-elbo-enhance`` in a fresh process, as a user types it (the
bundled model, its default settings unless the case says otherwise,
``--quiet`` so that stderr holds only what the command reports), and one
line per case is printed: exit status, wall time, peak memory of the
process, the lines on stderr, the outputs (sample rate and peak) and
whatever else is left in the output folder (hidden temporary files).

Usage::

    python tools/fault_tryout.py --work /tmp/tryout [--hour] [--only WORD ...]

The 1-hour file is enhanced with one Euler step and no refiner (the
fewest evaluations the model has); on a 2-core machine shared with other
jobs it takes most of an hour.
"""

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from speechbrain_elbo.minidata import DEFAULT_SAMPLES
from speechbrain_elbo.minidata.signals import mix_at_snr
from speechbrain_elbo.pretrained import pretrained_path

SR = 16000

#: Run only the cases whose name contains one of these (``--only``).
ONLY = []


def noisy_speech(seconds, seed=0):
    """Noisy speech at the model's rate: LibriVox speech, safari noise."""
    rng = np.random.default_rng(seed)
    clean, _ = sf.read(DEFAULT_SAMPLES / "speech_librivox.wav")
    noise, _ = sf.read(DEFAULT_SAMPLES / "noise_loop_safari.wav")
    size = int(seconds * SR)
    clean = np.resize(np.roll(clean, rng.integers(len(clean))), size)
    noise = np.resize(np.roll(noise, rng.integers(len(noise))), size)
    return mix_at_snr(clean, noise, 5.0, -26.0)[1]


def make_inputs(folder):
    """The inputs of the short cases; returns nothing, writes files."""
    folder.mkdir(parents=True, exist_ok=True)
    noisy = noisy_speech(3.0)
    unit = noisy / np.abs(noisy).max()

    def rate(new):
        return AF.resample(torch.from_numpy(noisy), SR, new).numpy()

    files = {
        "clipped.wav": (np.clip(20 * unit, -1, 1), SR, "PCM_16"),
        "very_loud_float.wav": (50 * unit, SR, "FLOAT"),
        "dc_offset.wav": (0.6 + 0.35 * unit, SR, "PCM_16"),
        "five_ms.wav": (noisy[: int(0.005 * SR)], SR, "PCM_16"),
        "rate_8000.wav": (rate(8000), 8000, "PCM_16"),
        "rate_22050.wav": (rate(22050), 22050, "PCM_16"),
        "rate_44100.flac": (rate(44100), 44100, "PCM_24"),
        "rate_48000.wav": (rate(48000), 48000, "PCM_16"),
        "pcm24.wav": (noisy, SR, "PCM_24"),
        "float32.wav": (noisy, SR, "FLOAT"),
        "mono.wav": (noisy, SR, "PCM_16"),
        "stereo.wav": (np.stack([noisy, np.roll(noisy, 400)], 1), SR, None),
        "thirty_s.wav": (noisy_speech(30.0, seed=1), SR, "PCM_16"),
    }
    for name, (data, sample_rate, subtype) in files.items():
        sf.write(folder / name, data, sample_rate, subtype=subtype)
    mixed = folder / "folder"
    mixed.mkdir(exist_ok=True)
    for index in range(3):
        sf.write(mixed / f"utt{index}.wav", np.roll(noisy, 1000 * index), SR)
    (mixed / "notes.wav").write_text("meeting notes, saved as .wav\n")
    (mixed / "README.txt").write_text("a text file among the recordings\n")


def make_hour(path):
    """One hour of noisy speech (16-bit, 16 kHz), written a minute at a
    time: levels from -32 to -20 dBFS, SNRs from 0 to 10 dB."""
    rng = np.random.default_rng(0)
    clean, _ = sf.read(DEFAULT_SAMPLES / "speech_librivox.wav")
    noise, _ = sf.read(DEFAULT_SAMPLES / "noise_vinyl_hiss.wav")
    with sf.SoundFile(str(path), "w", SR, 1, "PCM_16") as out:
        for _ in range(60):
            speech = np.resize(
                np.roll(clean, rng.integers(len(clean))), 60 * SR
            )
            hiss = np.resize(np.roll(noise, rng.integers(len(noise))), 60 * SR)
            snr, level = rng.uniform(0, 10), rng.uniform(-32, -20)
            out.write(mix_at_snr(speech, hiss, snr, level)[1])


def command():
    """The installed console script, or ``python -m speechbrain_elbo``."""
    script = pathlib.Path(sys.executable).parent / "speechbrain-elbo-enhance"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "speechbrain_elbo"]


def describe(out):
    """The outputs in ``out`` (rate, peak) and the hidden files left."""
    out = pathlib.Path(out)
    if not out.exists():
        return "no output folder", "none"
    files = sorted(p for p in out.rglob("*") if p.is_file())
    outputs = []
    for path in files:
        if path.suffix == ".wav" and not path.name.startswith("."):
            info = sf.info(str(path))
            peak = 0.0
            for block in sf.blocks(str(path), blocksize=1 << 20):
                peak = max(peak, float(np.abs(block).max()))
            outputs.append(
                f"{path.name} {info.samplerate} Hz {info.duration:.1f} s "
                f"peak {peak:.3f}"
            )
    others = [
        p.name for p in files if p.name.startswith(".") or "rank" in p.name
    ]
    return "; ".join(outputs) or "none", ", ".join(others) or "none"


def run(case, args, out, root, interrupt=None):
    """Run one case and print its line; ``interrupt`` = (signal, file
    pattern): send the signal once a file matching it appears in out."""
    if ONLY and not any(word in case for word in ONLY):
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = [*command(), *map(str, args), "--out", str(out), "--quiet"]
    start = time.perf_counter()
    stdout = root / "stdout.txt"
    process = subprocess.Popen(
        full,
        stderr=subprocess.PIPE,
        stdout=open(stdout, "w"),
        env=env,
        # Ctrl-C as in a terminal, even when this script runs in the
        # background (where the shell makes children ignore SIGINT)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    ended = None  # (pid, status, usage) once reaped
    if interrupt is not None:
        sig, pattern = interrupt
        while not list(pathlib.Path(out).glob(pattern)):
            ended = os.wait4(process.pid, os.WNOHANG)
            if ended[0]:
                break
            time.sleep(0.05)
        else:
            process.send_signal(sig)
    stderr = process.stderr.read().decode()
    if not ended or not ended[0]:
        ended = os.wait4(process.pid, 0)
    _, status, usage = ended
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    lines = [
        line.replace(str(root) + "/", "")
        for line in stderr.splitlines()
        if line.strip()
    ]
    lines += [f"stdout: {line}" for line in stdout.read_text().splitlines()]
    outputs, left = describe(out)
    shown = " ".join(str(a).replace(str(root) + "/", "") for a in args)
    print(
        f"| {case} | `{shown}` | {process.returncode} | {seconds:.0f} s, "
        f"{usage.ru_maxrss / 1024:.0f} MB | {len(lines)}: "
        f"{' / '.join(lines) or '-'} | {outputs} | {left} |",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="work folder")
    parser.add_argument("--hour", action="store_true", help="also 1 hour")
    parser.add_argument(
        "--only", nargs="+", default=[], help="cases whose name has a word"
    )
    args = parser.parse_args(argv)
    ONLY[:] = args.only
    root = pathlib.Path(args.work).absolute()
    shutil.rmtree(root, ignore_errors=True)
    inputs = root / "in"
    make_inputs(inputs)
    runs = root / "out"
    runs.mkdir()
    print(
        "| case | arguments | exit | wall, peak memory | stderr lines | "
        "outputs | left in the output folder |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in (
        "clipped.wav",
        "very_loud_float.wav",
        "dc_offset.wav",
        "rate_8000.wav",
        "rate_22050.wav",
        "rate_44100.flac",
        "rate_48000.wav",
        "pcm24.wav",
        "float32.wav",
        "mono.wav",
    ):
        stem = name.split(".")[0]
        run(stem, [inputs / name], runs / stem, root)
    run("stereo", [inputs / "stereo.wav"], runs / "stereo", root)
    mix = [inputs / "stereo.wav", "--mix-down"]
    run("stereo, --mix-down", mix, runs / "stereo_mix", root)
    run("5 ms", [inputs / "five_ms.wav"], runs / "five_ms", root)
    run("folder", [inputs / "folder"], runs / "folder", root)
    skip = [inputs / "folder", "--skip-errors"]
    run("folder, --skip-errors", skip, runs / "folder_skip", root)
    (runs / "a_file").write_text("in the way")
    mono = inputs / "mono.wav"
    run("--out under a file", [mono], runs / "a_file" / "out", root)
    run("--out in /proc", [mono], pathlib.Path("/proc/tryout_out"), root)
    run("output exists", [mono], runs / "mono", root)
    pc3 = [inputs / "clipped.wav", "--sampler", "pc", "--steps", "3"]
    run("PC sampler, 3 steps", pc3, runs / "pc3", root)
    run("--device cuda:0", [mono, "--device", "cuda:0"], runs / "cuda", root)
    model = root / "untrusted_model"
    shutil.copytree(pretrained_path("minivb-small"), model)
    with open(model / "hyperparams.yaml", "a") as handle:
        handle.write("\nextra: !apply:os.system [echo the YAML ran this]\n")
    untrusted = [mono, "--model", model]
    run("model YAML runs a command", untrusted, runs / "untrusted", root)
    trusted = [*untrusted, "--trust-model"]
    run("the same, --trust-model", trusted, runs / "trusted", root)
    long = [inputs / "thirty_s.wav", "--chunk-seconds", "5"]
    stop = (signal.SIGINT, ".thirty_s.wav.*")
    run("Ctrl-C while writing", long, runs / "ctrl_c", root, stop)
    stop = (signal.SIGTERM, ".thirty_s.wav.*")
    run("SIGTERM while writing", long, runs / "sigterm", root, stop)
    resume = [*long, "--resume"]
    run("the same, --resume", resume, runs / "sigterm", root)
    if args.hour:
        make_hour(inputs / "hour.wav")
        hour = [inputs / "hour.wav", "--steps", "1", "--no-refiner"]
        run("1 hour, 1 Euler step", hour, runs / "hour", root)


if __name__ == "__main__":
    main()
