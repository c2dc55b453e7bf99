"""How the networks run at inference: backend, CPU threads, precision.

- :func:`default_threads`: the CPU threads used when none are given: the
  cores this process may use that other processes are not already using
  (:func:`other_load`: their runnable tasks now), at least 1. Measured
  (docs/inference.md, "Speed: backend, CPU threads, precision"): on an
  idle machine more threads are faster; on a busy one
  threads beyond the free cores make PyTorch several times slower (its
  threads wait for each other at every operation while other processes hold
  the cores), and ONNX Runtime somewhat slower.
- :func:`set_threads`: PyTorch's intra-op threads (process-wide).
- :func:`check_precision`: ``"fp32"``, ``"bf16"`` or ``"fp16"`` for a
  device, one clear error where it cannot be used (fp16 on a CPU, bf16 on a
  CPU without bf16 instructions, anything but fp32 with ONNX Runtime).
- :class:`AutocastNetwork`: a network run under ``torch.autocast``, its
  output float32: mixed precision for the networks only, while the STFT,
  the sampler and the SDE stay float32.

Example
-------
>>> default_threads() >= 1
True
>>> check_precision("fp32", "cpu")
torch.float32
"""

import math
import os
import pathlib
import time

import torch

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "check_backend",
    "usable_cpus",
    "other_load",
    "default_threads",
    "check_threads",
    "set_threads",
    "cpu_has_bf16",
    "check_precision",
    "AutocastNetwork",
]

#: Backends that run the networks.
BACKENDS = ("torch", "onnxruntime")

#: Precision names and the autocast dtype of the networks.
PRECISIONS = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_backend(backend):
    """``backend`` checked (None is ``"torch"``).

    Example
    -------
    >>> check_backend(None), check_backend("ONNXRuntime")
    ('torch', 'onnxruntime')
    >>> check_backend("tensorrt")
    Traceback (most recent call last):
    ...
    ValueError: Unknown backend 'tensorrt'; choose 'torch' or 'onnxruntime'.
    """
    name = "torch" if backend is None else str(backend).lower()
    if name not in BACKENDS:
        raise ValueError(
            f"Unknown backend {backend!r}; choose 'torch' or 'onnxruntime'."
        )
    return name


def usable_cpus():
    """CPUs this process may run on: its affinity, capped by a cgroup quota.

    Example
    -------
    >>> 1 <= usable_cpus() <= os.cpu_count()
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "200000 100000"
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _own_running_threads():
    """This process's threads that are running or runnable now (Linux)."""
    count = 0
    for stat in pathlib.Path("/proc/self/task").glob("*/stat"):
        try:
            # "pid (comm) S ...": the state follows the last ")"
            if stat.read_text().rpartition(")")[2].split()[0] == "R":
                count += 1
        except (OSError, IndexError):
            continue
    return count


def other_load(samples=20, interval=0.005):
    """The CPU-bound work of other processes now, in busy cores.

    On Linux, the runnable tasks of the system (``procs_running`` of
    ``/proc/stat``) less this process's own runnable threads, averaged over
    ``samples`` readings ``interval`` seconds apart: a process that computes
    counts, this one does not (the 1-minute load average counts this
    process's own recent work as if another held the core, and lags a
    competitor that just started). Elsewhere, the 1-minute load average.

    Arguments
    ---------
    samples : int
        Readings averaged.
    interval : float
        Seconds between readings.

    Returns
    -------
    float

    Example
    -------
    >>> other_load(samples=2, interval=0.0) >= 0.0
    True
    """
    readings = []
    for index in range(samples):
        try:
            with open("/proc/stat") as handle:
                running = next(
                    int(line.split()[1])
                    for line in handle
                    if line.startswith("procs_running")
                )
        except (OSError, StopIteration, ValueError):
            break
        readings.append(max(0, running - _own_running_threads()))
        if index + 1 < samples:
            time.sleep(interval)
    if readings:
        return sum(readings) / len(readings)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def default_threads(load=None):
    """The CPU threads used when none are given.

    The usable CPUs (:func:`usable_cpus`) less the work of other processes
    (:func:`other_load`, rounded), at least 1: all cores on an idle
    machine, 1 on a 2-core machine with one other busy process. It is read
    once, when a model is loaded; on a machine whose load changes a lot,
    give the threads (1 is never slow by more than the number of cores).

    Arguments
    ---------
    load : float, optional
        The other processes' load to use (default: :func:`other_load`).

    Example
    -------
    >>> default_threads(load=0.0) == usable_cpus()
    True
    >>> default_threads(load=1000.0)
    1
    """
    if load is None:
        load = other_load()
    cpus = usable_cpus()
    return int(max(1, min(cpus, cpus - math.floor(load + 0.5))))


def check_threads(threads):
    """``threads`` checked; None is the default.

    The default is PyTorch's current setting, capped at
    :func:`default_threads` (never more threads than free cores; a setting
    the program made, e.g. ``torch.set_num_threads(1)``, is kept when it is
    lower); with ``OMP_NUM_THREADS`` set (the user's choice for the
    process) PyTorch's current setting as it is.

    Example
    -------
    >>> check_threads(2)
    2
    >>> check_threads(None) <= torch.get_num_threads()
    True
    >>> check_threads(0)
    Traceback (most recent call last):
    ...
    ValueError: threads must be an integer >= 1, got 0.
    """
    if threads is None:
        current = torch.get_num_threads()
        if os.environ.get("OMP_NUM_THREADS", "").strip():
            return current
        return max(1, min(current, default_threads()))
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}.")
    return int(threads)


def set_threads(threads):
    """Set PyTorch's intra-op CPU threads (for the whole process).

    Arguments
    ---------
    threads : int or None
        Threads, or None for the default (:func:`check_threads`).

    Returns
    -------
    int
        The threads set.

    Example
    -------
    >>> before = torch.get_num_threads()
    >>> set_threads(1), torch.get_num_threads()
    (1, 1)
    >>> _ = set_threads(before)
    """
    threads = check_threads(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def cpu_has_bf16():
    """Whether this CPU has bf16 instructions (AVX512-BF16, AMX or Arm BF16).

    Example
    -------
    >>> cpu_has_bf16() in (True, False)
    True
    """
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            pass
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def check_precision(precision, device, backend="torch"):
    """The autocast dtype of ``precision`` on ``device``, or a clear error.

    Arguments
    ---------
    precision : str or None
        ``"fp32"`` (None), ``"bf16"`` or ``"fp16"``.
    device : str or torch.device
        Where the networks run.
    backend : str
        ``"torch"`` or ``"onnxruntime"`` (fp32 only).

    Returns
    -------
    torch.dtype

    Raises
    ------
    ValueError
        An unknown name, fp16 on a CPU, bf16 on a CPU without bf16
        instructions or on a GPU without bf16, or a reduced precision with
        the ONNX Runtime backend; the message says what to use instead.

    Example
    -------
    >>> check_precision("fp16", "cpu")
    Traceback (most recent call last):
    ...
    ValueError: precision='fp16' runs on a GPU only; on the CPU use 'fp32'...
    """
    name = "fp32" if precision is None else str(precision).lower()
    if name not in PRECISIONS:
        raise ValueError(
            f"Unknown precision {precision!r}; choose one of "
            f"{list(PRECISIONS)}."
        )
    dtype = PRECISIONS[name]
    if name == "fp32":
        return dtype
    if backend != "torch":
        raise ValueError(
            f"precision={name!r} applies to the torch backend; the "
            f"{backend} backend runs the networks in fp32 (use "
            "backend='torch' for mixed precision)."
        )
    kind = torch.device(device).type
    if kind == "cpu" and name == "fp16":
        raise ValueError(
            "precision='fp16' runs on a GPU only; on the CPU use 'fp32' "
            "(or 'bf16' on a processor with bf16 instructions)."
        )
    if kind == "cpu" and not cpu_has_bf16():
        raise ValueError(
            "precision='bf16' on this CPU: it has no bf16 instructions "
            "(AVX512-BF16, AMX or Arm BF16), so bf16 would be emulated and "
            "slower than fp32; use precision='fp32' here, or bf16/fp16 on "
            "a GPU."
        )
    if kind == "cuda" and name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            "precision='bf16': this GPU has no bf16; use precision='fp16'."
        )
    return dtype


class AutocastNetwork(torch.nn.Module):
    """A network run under ``torch.autocast``; its output float32.

    Mixed precision for the network only: whatever calls it (the score
    model's parameterisation, the sampler, the SDE, the STFT) stays in
    float32. It carries the attributes the pipeline reads from a network
    (``frame_multiple``, ``score_parameterisation``...).

    Arguments
    ---------
    net : torch.nn.Module
        The network (kept as a sub-module).
    dtype : torch.dtype
        ``torch.bfloat16`` or ``torch.float16``.
    device_type : str
        ``"cuda"`` or ``"cpu"``.

    Example
    -------
    >>> net = torch.nn.Linear(4, 2)
    >>> net.frame_multiple = 4
    >>> fast = AutocastNetwork(net, torch.bfloat16, "cpu")
    >>> out = fast(torch.randn(3, 4))
    >>> out.dtype, fast.frame_multiple
    (torch.float32, 4)
    """

    def __init__(self, net, dtype, device_type):
        super().__init__()
        from speechbrain_elbo.onnx_backend import CARRIED_ATTRIBUTES

        self.net = net
        self.dtype = dtype
        self.device_type = device_type
        for name in CARRIED_ATTRIBUTES:
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))

    def forward(self, *args, **kwargs):
        """``net(*args, **kwargs)`` under autocast, returned in float32."""
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.net(*args, **kwargs)
        return out.float()
