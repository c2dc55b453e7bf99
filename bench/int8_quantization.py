"""Post-training int8 quantization of a model's networks: speed and quality.

Why the package offers no int8 precision (issue 15, docs/inference.md).
The networks of ``--model`` are exported to ONNX (the ONNX Runtime backend,
:mod:`speechbrain_elbo.onnx_backend`) and statically quantized by ONNX
Runtime (QDQ format: every convolution's weights per output channel to
int8, its input activations to uint8 with one scale per tensor, from the
minimum and maximum seen on calibration inputs; ONNX Runtime's CPU
provider fuses them into int8 ``QLinearConv`` kernels). The calibration
inputs are the networks' real inputs while the model enhances the first
``--calibration-items`` validation items with its default sampler; the
quality is measured on the first ``--items`` test items (never used to
calibrate), with the same seeds for float32 and int8.

It prints:

- the per-forward time of the float32 and the int8 score network (batch
  1, F = 256, ``--frames`` frames, ``--threads`` threads, median of
  ``--repeats``, alternating);
- PESQ-WB, ESTOI and SI-SDR of the noisy input, stage 1 and both stages
  with float32 and with int8 networks, and the SI-SDR of each int8 output
  against the float32 one;
- for the convolutions of the score network, the spread of their input
  activations on one calibration input (largest magnitude over the median
  magnitude, and the frequency row of the largest): one uint8 scale per
  tensor resolves values down to about max / 255, so a tensor whose median
  lies far below that loses most of its values;
- the machine and the command.

Usage (from the repository root; about 10 minutes for 30 items)::

    .venv/bin/python bench/int8_quantization.py --data MINIVB_DIR
"""

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def record_inputs(enhancer, items):
    """The inputs of each ONNX network while ``enhancer`` enhances
    ``items`` (item k seeded with k): {"score_model": [feeds], ...}."""
    nets = {"score_model": enhancer.score_model.backbone}
    if enhancer.refiner is not None:
        nets["refiner"] = enhancer.refiner.backbone
    feeds = {key: [] for key in nets}
    for key, net in nets.items():

        def run(inputs, key=key, net=net, run=net._run):
            feeds[key].append(
                {
                    name: value.detach().cpu().numpy().copy()
                    for name, value in zip(net.inputs, inputs, strict=True)
                }
            )
            return run(inputs)

        net._run = run
    try:
        for k, item in enumerate(items):
            noisy = enhancer.load_waveform(item["noisy"])
            enhancer.enhance_stages(noisy, seed=k)
    finally:
        for net in nets.values():
            del net._run  # the class's method again
    return nets, feeds


def quantize(source, target, feeds):
    """The int8 QDQ graph of ``source`` calibrated on ``feeds``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    prepared = target.with_name(target.stem + "_prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv"],
        calibrate_method=CalibrationMethod.MinMax,
    )
    return prepared


def session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"]
    )


def activation_spread(prepared, feed, worst):
    """The ``worst`` widest convolution inputs on ``feed``, as (index,
    tensor name, max/median magnitude, frequency row of the max, rows);
    the number of distinct inputs; the median max/median over them."""
    import numpy as np
    import onnx

    model = onnx.load(str(prepared))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    names = list(dict.fromkeys(n.input[0] for n in convs))
    for name in names:
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(
                name, onnx.TensorProto.FLOAT, None
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "spread.onnx"
        onnx.save(model, str(path))
        values = session(path, 1).run(names, feed)
    rows = []
    for k, (name, value) in enumerate(zip(names, values, strict=True)):
        magnitude = np.abs(value)
        peak = np.unravel_index(magnitude.argmax(), magnitude.shape)
        spread = float(magnitude.max() / max(np.median(magnitude), 1e-12))
        rows.append((k, name, spread, int(peak[2]), value.shape[2]))
    rows.sort(key=lambda r: -r[2])
    return rows[:worst], len(names), statistics.median(r[2] for r in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minivb-small")
    parser.add_argument("--data", required=True, help="MiniVB or MiniWHAMR")
    parser.add_argument("--calibration-items", type=int, default=8)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worst", type=int, default=5)
    parser.add_argument("--work", help="folder for the graphs (default tmp)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    import torch
    from inference import machine

    from speechbrain_elbo.demo.data import load_test_items
    from speechbrain_elbo.inference import DiffusionEnhancement
    from speechbrain_elbo.metrics import estoi, pesq_wb, si_sdr

    torch.set_num_threads(args.threads)
    begin = time.perf_counter()
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="sbe_int8_"))
    enhancer = DiffusionEnhancement.from_hparams(
        args.model,
        savedir=work / "savedir",
        run_opts={"device": "cpu"},
        threads=args.threads,
        backend="onnxruntime",
    )
    calibration = load_test_items(
        args.data, args.calibration_items, split="valid"
    )
    nets, feeds = record_inputs(enhancer, calibration)
    sessions, prepared = {}, {}
    for key, net in nets.items():
        target = work / f"{key}.int8.onnx"
        prepared[key] = quantize(net.path, target, feeds[key])
        sessions[key] = (net.session, session(target, args.threads))
    print(
        f"Calibrated on {sum(map(len, feeds.values()))} network inputs of "
        f"{len(calibration)} validation items",
        flush=True,
    )

    # per-forward time of the score network, float32 and int8 alternating
    net = nets["score_model"]
    x = np.random.default_rng(0).standard_normal((1, 4, 256, args.frames))
    feed = {"x": x.astype(np.float32), "cond": np.array([-1.0], np.float32)}
    times = {"float32": [], "int8": []}
    for _ in range(args.repeats):
        for name, s in zip(times, sessions["score_model"], strict=True):
            start = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - start)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}

    # quality on the test items: float32, then int8 sessions
    items = load_test_items(args.data, args.items, split="test")
    pairs = [
        (enhancer.load_waveform(i["noisy"]), enhancer.load_waveform(i["clean"]))
        for i in items
    ]
    outs = {}
    for column, precision in enumerate(("float32", "int8")):
        for key, pair in sessions.items():
            nets[key].session = pair[column]
        outs[precision] = [
            enhancer.enhance_stages(noisy, seed=k)
            for k, (noisy, _) in enumerate(pairs)
        ]
    systems = ["stage1"] + (["stage1+2"] if enhancer.has_refiner else [])

    def scores(estimates, reference=None):
        values = [
            (
                float(pesq_wb(e, clean)),
                float(estoi(e, clean)),
                float(si_sdr(e, clean)),
                float(si_sdr(e, r)) if reference else float("nan"),
            )
            for e, (_, clean), r in zip(
                estimates, pairs, reference or estimates, strict=True
            )
        ]
        return np.mean(values, axis=0)

    lines = [
        "| system | networks | PESQ-WB | ESTOI | SI-SDR (dB) | SI-SDR vs "
        "float32 output (dB) |",
        "|---|---|---|---|---|---|",
    ]
    noisy = scores([p[0] for p in pairs])
    lines.append(
        f"| noisy | - | {noisy[0]:.3f} | {noisy[1]:.3f} | {noisy[2]:.2f} | - |"
    )
    for system in systems:
        reference = [o[system] for o in outs["float32"]]
        for precision in ("float32", "int8"):
            estimates = [o[system] for o in outs[precision]]
            s = scores(estimates, reference if precision == "int8" else None)
            versus = "-" if precision == "float32" else f"{s[3]:.1f}"
            lines.append(
                f"| {system} | {precision} | {s[0]:.3f} | {s[1]:.3f} "
                f"| {s[2]:.2f} | {versus} |"
            )
    worst, count, median = activation_spread(
        prepared["score_model"], feeds["score_model"][1], args.worst
    )

    print(
        f"\nModel {args.model}, ONNX Runtime, {args.threads} thread(s). "
        f"Score network per forward (batch 1, F = 256, {args.frames} "
        f"frames, median of {args.repeats}): float32 {ms['float32']:.0f} "
        f"ms, int8 {ms['int8']:.0f} ms (x{ms['float32'] / ms['int8']:.2f})."
    )
    print(
        f"\n{len(pairs)} test items of {args.data} (item k seeded with k), "
        "the model's default sampler:\n"
    )
    print("\n".join(lines))
    print(
        f"\nThe score network's {count} distinct convolution inputs on one "
        f"calibration input: largest magnitude / median magnitude, median "
        f"{median:.0f}; the {args.worst} widest:\n"
    )
    print("| input | max / median | frequency row of the max (of) |")
    print("|---|---|---|")
    for _, name, spread, row, rows in worst:
        print(f"| {name} | {spread:.0f} | {row} ({rows}) |")
    print(
        f"\n{machine(args.threads)}; {time.perf_counter() - begin:.0f} s. "
        "Repeat: "
        f"python bench/int8_quantization.py --model {args.model} --data "
        f"{args.data} --calibration-items {args.calibration_items} --items "
        f"{args.items} --threads {args.threads} --frames {args.frames} "
        f"--repeats {args.repeats} --worst {args.worst}"
    )


if __name__ == "__main__":
    main()
