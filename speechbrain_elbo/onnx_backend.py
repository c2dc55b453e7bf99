"""ONNX Runtime backend: the networks of a model run by ONNX Runtime.

Only the networks change: the score network's backbone and the refiner's
backbone are exported once to ONNX (``torch.onnx.export(..., dynamo=True)``,
dynamic batch and frame axes) and replaced, inside the library's own
:class:`~speechbrain_elbo.score.ScoreModel` and refiner, by an
:class:`OnnxNetwork`: a module with the same call signature
``net(x, cond, feature_divisor=None)`` that runs an ONNX Runtime session.
The samplers, the STFT, the SDE and the score parameterisation stay the
library's PyTorch code, so that the same seed draws the same noise and the
two backends agree to float rounding.

The exported files are cached (:func:`onnx_path`): one file per network,
``<cache>/<key>/<name>.onnx``, where ``key`` is the SHA-256 of the network's
class, configuration, weights and of this module's :data:`EXPORT_FORMAT`:
a changed checkpoint is a new file, never a stale one. ``cache`` is
``savedir/onnx`` when the model is loaded with a ``savedir``, else the
model folder's ``onnx/`` when it is writable, else the user's cache
(:func:`user_cache_dir`). Exporting a network takes from tens of seconds
(tiny networks) to minutes (NCSN++) on a CPU; loading a cached file takes
well under a second.

It needs the ``onnx`` extra (``pip install speechbrain_elbo[onnx]``:
``onnxruntime``, ``onnx``, ``onnxscript``); ONNX Runtime's CUDA execution
provider (``onnxruntime-gpu``) is used when the model runs on a CUDA device
and the provider is present.

Example
-------
>>> from speechbrain_elbo.lobes.ncsnpp import NCSNpp
>>> net = NCSNpp(nf=4, ch_mult=[1, 2], num_res_blocks=1,
...              attn_resolutions=[]).eval()
>>> inputs_of(net)
('x', 'cond')
>>> len(network_key(net, inputs_of(net)))
64
"""

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import time
import warnings

import torch
import torch.nn.functional as F

__all__ = [
    "EXPORT_FORMAT",
    "OnnxNetwork",
    "OnnxBackendError",
    "require_onnxruntime",
    "inputs_of",
    "network_key",
    "user_cache_dir",
    "cache_roots",
    "onnx_path",
    "export_network",
    "onnx_network",
    "providers_for",
]

logger = logging.getLogger(__name__)

#: Version of the exported graphs' conventions (inputs, output, axes);
#: part of every cache key, so a change makes new files.
EXPORT_FORMAT = 1

#: Attributes of a network that the pipeline and the score model read;
#: an :class:`OnnxNetwork` carries them over.
CARRIED_ATTRIBUTES = (
    "frame_multiple",
    "unet_multiple",
    "score_parameterisation",
    "preconditioning",
    "frame_padding",
    "decode_padded",
    "in_channels",
    "out_channels",
    "conditional",
    "config",
)

_EXTRA_HINT = (
    "install the onnx extra: pip install 'speechbrain_elbo[onnx]' "
    "(onnxruntime, onnx, onnxscript), or use backend='torch'"
)


class OnnxBackendError(RuntimeError):
    """The ONNX Runtime backend cannot run this model (named reason)."""


def require_onnxruntime(export=False):
    """Import ``onnxruntime`` (and, to export, ``onnx`` and ``onnxscript``).

    Arguments
    ---------
    export : bool
        Also check the packages that exporting needs.

    Returns
    -------
    module
        ``onnxruntime``.

    Raises
    ------
    ImportError
        One line naming the missing package and the extra to install.

    Example
    -------
    >>> require_onnxruntime().__name__
    'onnxruntime'
    """
    names = ["onnxruntime"] + (["onnx", "onnxscript"] if export else [])
    for name in names:
        try:
            __import__(name)
        except ImportError as error:
            raise ImportError(
                f"backend='onnxruntime' needs the package {name}, which is "
                f"not installed: {_EXTRA_HINT}."
            ) from error
    import onnxruntime

    return onnxruntime


def inputs_of(net):
    """Names of the graph inputs that ``net`` is exported with.

    ``x`` always; ``cond`` for a noise-conditional network (attribute
    ``conditional``, default True); ``feature_divisor`` for a backbone of
    the ``"sgmse_time"`` score parameterisation, which the score model
    calls with it (:mod:`speechbrain_elbo.score`).

    Example
    -------
    >>> class Net(torch.nn.Module):
    ...     conditional = False
    >>> inputs_of(Net())
    ('x',)
    """
    names = ["x"]
    if getattr(net, "conditional", True):
        names.append("cond")
    if getattr(net, "score_parameterisation", None) == "sgmse_time":
        names.append("feature_divisor")
    return tuple(names)


def network_key(net, inputs, num_freqs=None):
    """SHA-256 (hex) of what an exported graph depends on.

    The network's class, layout and ``config`` (when it has one), the
    graph's inputs and frequency bins, :data:`EXPORT_FORMAT`, and every
    parameter and buffer (names, shapes, dtypes, values): the key of the
    cache file.

    Example
    -------
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> network_key(a, ("x",)) == network_key(b, ("x",))
    False
    >>> _ = b.load_state_dict(a.state_dict())
    >>> network_key(a, ("x",)) == network_key(b, ("x",))
    True
    """
    digest = hashlib.sha256()
    kind = type(net)
    header = {
        "format": EXPORT_FORMAT,
        "class": f"{kind.__module__}.{kind.__qualname__}",
        "config": getattr(net, "config", None),
        "inputs": list(inputs),
        "num_freqs": num_freqs,
        "repr": repr(net),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(net.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def user_cache_dir():
    """The user's cache of exported graphs.

    ``$XDG_CACHE_HOME/speechbrain_elbo/onnx`` (default ``~/.cache/...``).

    Example
    -------
    >>> user_cache_dir().parts[-2:]
    ('speechbrain_elbo', 'onnx')
    """
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "speechbrain_elbo" / "onnx"


def cache_roots(folder=None, savedir=None, in_folder=True):
    """Where the exported graphs of a model may be cached, in order.

    Arguments
    ---------
    folder : str or pathlib.Path, optional
        The model folder.
    savedir : str or pathlib.Path, optional
        The ``savedir`` the model was loaded with.
    in_folder : bool
        Whether the folder itself may hold the cache (False for bundled
        models, which live inside the package, and hub snapshots).

    Returns
    -------
    list of pathlib.Path
        ``savedir/onnx``, ``folder/onnx``, :func:`user_cache_dir`, those
        that apply.

    Example
    -------
    >>> [p.name for p in cache_roots("model", "save")][:2]
    ['onnx', 'onnx']
    >>> cache_roots("model", in_folder=False) == [user_cache_dir()]
    True
    """
    roots = []
    if savedir is not None:
        roots.append(pathlib.Path(savedir) / "onnx")
    if folder is not None and in_folder:
        roots.append(pathlib.Path(folder) / "onnx")
    roots.append(user_cache_dir())
    return roots


def _writable(root):
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(root, os.W_OK | os.X_OK)


def onnx_path(net, name, roots, num_freqs=None):
    """The cache file of ``net``: found in one of ``roots``, else where to
    write it (the first writable root).

    Arguments
    ---------
    net : torch.nn.Module
        The network.
    name : str
        File name stem (``"score_model"``, ``"refiner"``).
    roots : list of pathlib.Path
        From :func:`cache_roots`.
    num_freqs : int, optional
        F of the graph's input (part of the key).

    Returns
    -------
    pathlib.Path
        ``<root>/<key[:16]>/<name>.onnx``; it exists if it was cached.

    Raises
    ------
    OnnxBackendError
        None of ``roots`` is writable and none holds the file.

    Example
    -------
    >>> root = getfixture("tmp_path")
    >>> path = onnx_path(torch.nn.Linear(2, 2), "net", [root])
    >>> path.parent.parent == root, path.name
    (True, 'net.onnx')
    """
    key = network_key(net, inputs_of(net), num_freqs)[:16]
    candidates = [pathlib.Path(r) / key / f"{name}.onnx" for r in roots]
    for path in candidates:
        if path.is_file():
            return path
    for path in candidates:
        if _writable(path.parent.parent):
            return path
    raise OnnxBackendError(
        "No folder to cache the exported ONNX graphs in: none of "
        f"{[str(r) for r in roots]} is writable; pass a writable savedir "
        "or set XDG_CACHE_HOME."
    )


class _Signature(torch.nn.Module):
    """``net`` with the keyword inputs of the graph only (for the
    exporter)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, cond=None, feature_divisor=None):
        kwargs = {} if cond is None else {"cond": cond}
        if feature_divisor is not None:
            kwargs["feature_divisor"] = feature_divisor
        return self.net(x, **kwargs)


def _frame_multiple(net):
    """Frame count the graph's frame axis is a multiple of."""
    return int(
        getattr(net, "unet_multiple", None)
        or getattr(net, "frame_multiple", None)
        or 1
    )


def export_network(net, path, num_freqs):
    """Export ``net`` to the ONNX file ``path``, atomically.

    The graph has inputs :func:`inputs_of` (float32: ``x`` (B, C, F, T),
    the others (B,)) and the output ``out`` (B, C', F, T), with the batch B
    and the frames T (a multiple of the network's ``unet_multiple``)
    dynamic.

    Arguments
    ---------
    net : torch.nn.Module
        A backbone network, e.g. :class:`~speechbrain_elbo.lobes.ncsnpp.NCSNpp`,
        on any device (exported on the CPU, in float32, in eval mode).
    path : str or pathlib.Path
        The ``.onnx`` file to write.
    num_freqs : int
        F, the frequency bins of the model's spectrograms.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    require_onnxruntime(export=True)
    from speechbrain_elbo.fileio import atomic_path

    path = pathlib.Path(path)
    inputs = inputs_of(net)
    multiple = _frame_multiple(net)
    in_channels = int(getattr(net, "in_channels", 4))
    device = next(iter(net.parameters()), torch.empty(0)).device
    training = net.training
    net.cpu().float().eval()
    batch = torch.export.Dim("batch")
    frames = torch.export.Dim("frames") * multiple
    # batch 2: an example of size 1 would be specialised by torch.export
    example = torch.randn(2, in_channels, int(num_freqs), 2 * multiple)
    kwargs, shapes = {}, {"x": {0: batch, 3: frames}}
    for name in inputs[1:]:
        # log(sigma_t) or t, and t: plausible values for the example
        values = [-1.0, -2.0] if name == "cond" else [0.5, 0.7]
        kwargs[name] = torch.tensor(values)
        shapes[name] = {0: batch}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Signature(net),
                (example,),
                kwargs=kwargs,
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=list(inputs),
                output_names=["out"],
                optimize=True,
                verbose=False,
            )
        with atomic_path(path, suffix=".onnx") as tmp:
            program.save(str(tmp))
    finally:
        net.to(device).train(training)
    logger.info(
        "Exported %s to %s in %.0f s.",
        type(net).__name__,
        path,
        time.perf_counter() - start,
    )
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's progress lines and torchvision notes."""
    names = ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")
    saved = [(n, logging.getLogger(n).level) for n in names]
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        for name, level in saved:
            logging.getLogger(name).setLevel(level)


def providers_for(device):
    """ONNX Runtime execution providers for a torch device.

    The CUDA provider (with the device's index) first when ``device`` is a
    CUDA device and the installed ONNX Runtime has it, then the CPU one.

    Example
    -------
    >>> providers_for("cpu")
    ['CPUExecutionProvider']
    """
    ort = require_onnxruntime()
    device = torch.device(device)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = device.index if device.index is not None else 0
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        else:
            logger.warning(
                "The model runs on %s but this ONNX Runtime has no CUDA "
                "execution provider (install onnxruntime-gpu): the networks "
                "run on the CPU.",
                device,
            )
    return providers


class OnnxNetwork(torch.nn.Module):
    """A backbone network run by an ONNX Runtime session.

    Called like the network it was exported from, ``net(x, cond,
    feature_divisor=None)`` on float32 tensors of any device; returns a
    float32 tensor on the device of ``x``. Frames that are not a multiple
    of the graph's frame multiple are zero-padded and cropped, as the
    PyTorch network does. It carries the attributes the pipeline reads
    (:data:`CARRIED_ATTRIBUTES`) and has no parameters.

    Arguments
    ---------
    path : str or pathlib.Path
        An ONNX file written by :func:`export_network`.
    like : torch.nn.Module
        The network it was exported from (attributes are copied; it is not
        kept).
    threads : int
        ONNX Runtime's intra-op threads (CPU).
    device : str or torch.device
        The device the inputs come from: a CUDA device uses ONNX Runtime's
        CUDA execution provider when present.

    Example
    -------
    >>> from speechbrain_elbo.lobes.ncsnpp import NCSNpp
    >>> net = NCSNpp(nf=4, ch_mult=[1, 2], num_res_blocks=1,
    ...              attn_resolutions=[]).eval()
    >>> hasattr(OnnxNetwork, "forward"), inputs_of(net)
    (True, ('x', 'cond'))
    """

    def __init__(self, path, like, threads=1, device="cpu"):
        super().__init__()
        ort = require_onnxruntime()
        self.path = pathlib.Path(path)
        for name in CARRIED_ATTRIBUTES:
            if hasattr(like, name):
                setattr(self, name, getattr(like, name))
        self.inputs = inputs_of(like)
        self.multiple = _frame_multiple(like)
        self.threads = int(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(self.path), options, providers=providers_for(device)
        )
        self.on_cuda = "CUDAExecutionProvider" in self.session.get_providers()
        graph_inputs = tuple(i.name for i in self.session.get_inputs())
        if graph_inputs != self.inputs:
            raise OnnxBackendError(
                f"{self.path} has inputs {graph_inputs}, the network needs "
                f"{self.inputs}; delete the file to export it again."
            )
        self.out_channels_graph = int(self.session.get_outputs()[0].shape[1])

    def extra_repr(self):
        return f"path={str(self.path)!r}, threads={self.threads}"

    def forward(self, x, cond=None, feature_divisor=None):
        """Run the graph; see the class docstring."""
        if x.dim() != 4 or x.is_complex():
            raise ValueError(
                f"x must be a real tensor (B, C, F, T), got shape "
                f"{tuple(x.shape)} and dtype {x.dtype}."
            )
        batch, frames = x.shape[0], x.shape[-1]
        values = {"x": x, "cond": cond, "feature_divisor": feature_divisor}
        feeds = []
        for name in self.inputs:
            value = values[name]
            if value is None:
                raise ValueError(
                    f"This network's graph needs {name!r} (it was exported "
                    f"with inputs {self.inputs})."
                )
            value = torch.as_tensor(value, device=x.device)
            if name != "x":
                value = value.reshape(-1).expand(batch)
            feeds.append(value)
        pad = (-frames) % self.multiple
        if pad:
            feeds[0] = F.pad(feeds[0], (0, pad))
        out = self._run(feeds)
        return out[..., :frames]

    def _run(self, feeds):
        """One session run through an IO binding (no copies on the CPU)."""
        import numpy as np

        device = feeds[0].device
        run_device = device if self.on_cuda or device.type == "cpu" else None
        if run_device is None:  # a GPU tensor, ONNX Runtime on the CPU
            run_device = torch.device("cpu")
        kind = "cuda" if run_device.type == "cuda" else "cpu"
        index = run_device.index or 0
        feeds = [f.to(run_device, torch.float32).contiguous() for f in feeds]
        x = feeds[0]
        out = torch.empty(
            (x.shape[0], self.out_channels_graph, *x.shape[2:]),
            dtype=torch.float32,
            device=run_device,
        )
        if kind == "cuda":
            torch.cuda.current_stream(run_device).synchronize()
        binding = self.session.io_binding()
        for name, value in zip(self.inputs, feeds, strict=True):
            binding.bind_input(
                name,
                kind,
                index,
                np.float32,
                tuple(value.shape),
                value.data_ptr(),
            )
        binding.bind_output(
            "out", kind, index, np.float32, tuple(out.shape), out.data_ptr()
        )
        self.session.run_with_iobinding(binding)
        return out.to(device)


def onnx_network(net, name, roots, num_freqs, threads=1, device="cpu"):
    """``net`` as an :class:`OnnxNetwork`, exported first if not cached.

    Arguments
    ---------
    net : torch.nn.Module
        A backbone network.
    name : str
        Its file name stem in the cache (``"score_model"``, ``"refiner"``).
    roots : list of pathlib.Path
        Cache folders, from :func:`cache_roots`.
    num_freqs : int
        F of the model's spectrograms (for the example input).
    threads : int
        ONNX Runtime's intra-op threads.
    device : str or torch.device
        The model's device.

    Returns
    -------
    OnnxNetwork
    """
    require_onnxruntime()
    path = onnx_path(net, name, roots, num_freqs)
    if not path.is_file():
        logger.warning(
            "Exporting the %s network to ONNX (once; cached in %s).",
            name,
            path.parent,
        )
        export_network(net, path, num_freqs)
    return OnnxNetwork(path, net, threads=threads, device=device)
