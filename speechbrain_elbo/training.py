"""Training and evaluation of the two-stage enhancer with SpeechBrain.

The recipes (VoiceBank-DEMAND, WHAMR!) only parse arguments, prepare data and
call what lives here:

- :class:`ScoreBrain` (stage 1): the score model trained with a loss chosen
  by name (METHOD.md s. 4) on random crops, an exponential moving average
  (EMA) of its weights used for validation, test and export, validation
  PESQ/ESTOI/SI-SDR on a few sampled files, test enhancement with NFE and
  real-time factor;
- :class:`RefinerBrain` (stage 2): the refinement model trained on cached
  stage-1 estimates with a data-domain loss (METHOD.md s. 6), and the test
  that puts the noisy input, stage 1 and stage 1+2 side by side together
  with the ELBO terms of stage 1 alone and with the refiner as decoder;
- helpers shared by both: :func:`make_ema`, :func:`build_score_loss`,
  :class:`RefinementLoss`, :func:`parse_arguments` (SpeechBrain's parser
  plus ``--overrides_file``), :func:`load_enhancer_folder` (an exported
  model through SpeechBrain's ``Pretrainer``) and :func:`write_csv`.

Both Brains are DDP-correct: the trained network is called through
``self.modules``, the EMA copy and the sampler are reached on the unwrapped
module, a non-finite loss is detected on every rank before ``backward`` so
that all ranks skip the same step, test utterances are split across ranks and
their scores gathered, and only the main process writes files.
"""

import csv
import math
import os
import pathlib
import time
import zlib
from types import SimpleNamespace

import ruamel.yaml
import speechbrain as sb
import torch
from ruamel.yaml.comments import Tag
from speechbrain.utils.distributed import (
    ddp_barrier,
    if_main_process,
    is_distributed_initialized,
)
from speechbrain.utils.logger import get_logger
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from speechbrain_elbo.elbo import fit_decoder_variance, negative_elbo
from speechbrain_elbo.losses import make_loss, masked_mean
from speechbrain_elbo.metrics import EnhancementMetrics, gather_objects
from speechbrain_elbo.score import ScoreModel
from speechbrain_elbo.spectral import (
    crop_frames,
    frame_mask,
    pad_frames,
    peak_normalize,
)

logger = get_logger(__name__)

__all__ = [
    "unwrap_module",
    "make_ema",
    "build_score_loss",
    "RefinementLoss",
    "utterance_seed",
    "frame_multiple_of",
    "write_csv",
    "parse_arguments",
    "stage_arguments",
    "load_enhancer_folder",
    "EnhancementBrain",
    "ScoreBrain",
    "RefinerBrain",
    "RESULT_FIELDS",
]

#: Columns of the test summary CSV (one row per system).
RESULT_FIELDS = [
    "system",
    "utterances",
    "pesq",
    "estoi",
    "si_sdr",
    "nfe",
    "rtf",
    "neg_elbo",
    "elbo_prior",
    "elbo_diffusion",
    "elbo_reconstruction",
    "elbo_stderr",
    "elbo_utterances",
    "decoder_variance",
]

#: Columns of the per-utterance test CSV.
UTTERANCE_FIELDS = [
    "id",
    "system",
    "pesq",
    "estoi",
    "si_sdr",
    "nfe",
    "seconds",
    "audio_seconds",
]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def unwrap_module(module):
    """The module inside a DDP or DataParallel wrapper (else itself).

    Example
    -------
    >>> net = torch.nn.Linear(2, 2)
    >>> unwrap_module(torch.nn.DataParallel(net)) is net
    True
    """
    wrappers = (
        torch.nn.parallel.DistributedDataParallel,
        torch.nn.DataParallel,
    )
    while isinstance(module, wrappers):
        module = module.module
    return module


def make_ema(module, decay=0.999):
    """Exponential moving average of a module's weights.

    A ``torch.optim.swa_utils.AveragedModel`` with the EMA update
    ``w_ema <- decay w_ema + (1 - decay) w`` (the first update copies the
    weights). Buffers are copied from the model at each update. The copy
    never receives gradients; it is a ``torch.nn.Module``, so a SpeechBrain
    ``Checkpointer`` saves and restores it (``n_averaged`` included).

    Arguments
    ---------
    module : torch.nn.Module
        The trained network (unwrapped from DDP).
    decay : float
        EMA decay in [0, 1).

    Returns
    -------
    torch.optim.swa_utils.AveragedModel
        Call ``ema.update_parameters(module)`` after each optimiser step;
        ``ema.module`` is the averaged network.

    Example
    -------
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> ema = make_ema(net, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(1.0)
    >>> ema.update_parameters(net)  # first update: copy
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(3.0)
    >>> ema.update_parameters(net)
    >>> ema.module.weight.item(), int(ema.n_averaged)
    (2.0, 2)
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {decay}.")
    ema = AveragedModel(
        unwrap_module(module),
        multi_avg_fn=get_ema_multi_avg_fn(decay),
        use_buffers=False,
    )
    ema.requires_grad_(False)
    ema.eval()
    return ema


def build_score_loss(
    name,
    sde,
    transform=None,
    importance_sampling=True,
    time_l1_weight=0.0,
):
    """The stage-1 loss selected by name, with only its own options.

    Arguments
    ---------
    name : str
        ``"sigma2"``, ``"likelihood"`` or ``"data_prediction"``.
    sde : speechbrain_elbo.sde.OUVESDE
        The diffusion process.
    transform : speechbrain_elbo.spectral.SpectralTransform, optional
        Needed by ``"data_prediction"`` when ``time_l1_weight > 0``.
    importance_sampling : bool
        ``"likelihood"`` only: draw t uniformly in log SNR.
    time_l1_weight : float
        ``"data_prediction"`` only: weight of the waveform L1 term.

    Returns
    -------
    callable
        ``loss(score_model, x0, y, generator=None, mask=None)``.

    Example
    -------
    >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
    >>> sde = OUVESDE(GeometricGNS())
    >>> build_score_loss("likelihood", sde).importance_sampling
    True
    >>> build_score_loss("sigma2", sde, time_l1_weight=0.5)
    Traceback (most recent call last):
    ...
    ValueError: time_l1_weight=0.5 only applies to loss 'data_prediction'...
    """
    if name != "data_prediction" and time_l1_weight:
        raise ValueError(
            f"time_l1_weight={time_l1_weight} only applies to loss "
            f"'data_prediction', not {name!r}; set it to 0."
        )
    if name == "likelihood":
        return make_loss(name, sde, importance_sampling=importance_sampling)
    if name == "data_prediction":
        return make_loss(
            name, sde, time_l1_weight=time_l1_weight, transform=transform
        )
    return make_loss(name, sde)


class RefinementLoss:
    """Data-domain loss of the refinement model (METHOD.md s. 6).

    ``spec_weight |r - x0|^2 + mag_weight (|r| - |x0|)^2`` averaged over the
    valid complex bins of the compressed spectrograms, plus
    ``time_weight`` times the mean absolute error of the decoded waveforms.

    Arguments
    ---------
    transform : speechbrain_elbo.spectral.SpectralTransform
        Decodes spectrograms for the time-domain term.
    spec_weight : float
        Weight of the compressed complex spectrogram MSE.
    mag_weight : float
        Weight of the compressed magnitude MSE.
    time_weight : float
        Weight of the waveform L1 term.

    Example
    -------
    >>> from speechbrain_elbo.spectral import SpectralTransform
    >>> loss = RefinementLoss(SpectralTransform(), 1.0, 1.0, 0.0)
    >>> x0 = torch.ones(1, 1, 256, 4, dtype=torch.complex64)
    >>> round(loss(x0 * 1j, x0).item(), 4)  # |i - 1|^2 = 2, same magnitude
    2.0
    """

    def __init__(
        self, transform, spec_weight=1.0, mag_weight=0.0, time_weight=0.0
    ):
        weights = {
            "spec_weight": spec_weight,
            "mag_weight": mag_weight,
            "time_weight": time_weight,
        }
        for key, value in weights.items():
            if value < 0:
                raise ValueError(f"{key} must be >= 0, got {value}.")
        if not any(weights.values()):
            raise ValueError(
                "RefinementLoss needs at least one positive weight among "
                "spec_weight, mag_weight and time_weight."
            )
        self.transform = transform
        self.spec_weight = float(spec_weight)
        self.mag_weight = float(mag_weight)
        self.time_weight = float(time_weight)

    def __call__(self, estimate, target, mask=None):
        """Loss of complex (B, 1, F, T) spectrograms; mask (B, 1, 1, T)."""
        loss = estimate.real.new_zeros(())
        if self.spec_weight:
            error = (estimate - target).abs().pow(2)
            loss = loss + self.spec_weight * masked_mean(error, mask)
        if self.mag_weight:
            error = (estimate.abs() - target.abs()).pow(2)
            loss = loss + self.mag_weight * masked_mean(error, mask)
        if self.time_weight:
            if mask is not None:
                estimate, target = estimate * mask, target * mask
            length = (target.shape[-1] - 1) * self.transform.hop_length
            error = self.transform.decode(
                estimate, length
            ) - self.transform.decode(target, length)
            loss = loss + self.time_weight * error.abs().mean()
        return loss


def utterance_seed(seed, uid, sample=0):
    """A reproducible seed for one utterance (and stochastic sample).

    Independent of the order and rank in which utterances are processed, so
    a stage-1 estimate is the same on one GPU or on eight.

    Example
    -------
    >>> utterance_seed(1234, "p232_001") == utterance_seed(1234, "p232_001")
    True
    >>> utterance_seed(1234, "p232_001", 1) != utterance_seed(1234, "p232_001")
    True
    """
    return (int(seed) * 1000003 + zlib.crc32(f"{uid}#{sample}".encode())) % (
        2**63 - 1
    )


def frame_multiple_of(*modules):
    """Frame count that the inputs of all ``modules`` must be a multiple of.

    Inference (:class:`speechbrain_elbo.inference.DiffusionEnhancement`)
    zero-pads the noisy spectrogram to this multiple before sampling and
    crops afterwards; the recipes do the same, so that what they test and
    cache is what the exported model computes.

    Example
    -------
    >>> a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    >>> a.frame_multiple, b.frame_multiple = 4, 6
    >>> frame_multiple_of(a, b, None)
    12
    """
    multiple = 1
    for module in modules:
        if module is None:
            continue
        module = unwrap_module(module)
        value = getattr(module, "frame_multiple", None)
        if value is None and hasattr(module, "backbone"):
            value = getattr(module.backbone, "frame_multiple", None)
        multiple = math.lcm(multiple, int(value or 1))
    return multiple


def write_csv(path, rows, fieldnames):
    """Write dict rows to a CSV file atomically (main process only).

    Missing fields are left empty; floats are written with 4 decimals.

    Example
    -------
    >>> path = getfixture("tmp_path") / "r.csv"
    >>> write_csv(path, [{"system": "noisy", "pesq": 1.23456}],
    ...           ["system", "pesq", "nfe"])
    >>> print(path.read_text().strip())
    system,pesq,nfe
    noisy,1.2346,
    """
    if not if_main_process():
        return
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=fieldnames, extrasaction="ignore"
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: _format_cell(row.get(key)) for key in fieldnames}
            )
    os.replace(tmp, path)


def _format_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return value


def _synchronize(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
OVERRIDES_FLAG = "--overrides_file"


def _absolute_includes(node, folder):
    """Rewrite relative ``!include:`` tags to absolute paths (in place)."""
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", None)
    if value and value.startswith("!include:"):
        target = value[len("!include:") :]
        if not os.path.isabs(target):
            absolute = os.path.normpath(os.path.join(folder, target))
            node.yaml_set_ctag(Tag(suffix="!include:" + absolute))
    if isinstance(node, dict):
        for child in node.values():
            _absolute_includes(child, folder)
    elif isinstance(node, list):
        for child in node:
            _absolute_includes(child, folder)


def _read_overrides_file(path):
    yaml = ruamel.yaml.YAML()
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{OVERRIDES_FLAG} {path}: no such file. Give the path of a YAML "
            "file of top-level overrides, e.g. "
            "hparams/overrides/tiny_score.yaml."
        )
    with open(path, encoding="utf-8") as handle:
        tree = yaml.load(handle)
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ValueError(
            f"{path} must hold a mapping of overrides (key: value lines), "
            f"got a {type(tree).__name__}."
        )
    for value in tree.values():
        _absolute_includes(value, str(path.parent.absolute()))
    return tree


def parse_arguments(argv=None):
    """SpeechBrain's ``parse_arguments`` plus ``--overrides_file PATH``.

    An overrides file is a YAML mapping of top-level keys, applied before
    the ``--key=value`` overrides of the command line (which win). Relative
    ``!include:`` paths inside it are taken relative to the overrides file.
    The flag may be repeated; later files win.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    hparams_file : str
    run_opts : speechbrain.RunOptions
    overrides : str
        YAML overrides for ``load_hyperpyyaml``.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "o.yaml").write_text("batch_size: 2\\nlr: 0.1\\n")
    >>> _, opts, overrides = parse_arguments(
    ...     ["h.yaml", "--overrides_file", str(tmp / "o.yaml"), "--lr=0.5"])
    >>> print(overrides.strip())
    batch_size: 2
    lr: 0.5
    """
    import io
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    files, rest, index = [], [], 0
    while index < len(argv):
        arg = argv[index]
        if arg == OVERRIDES_FLAG:
            if index + 1 >= len(argv):
                raise ValueError(f"{OVERRIDES_FLAG} needs a file path.")
            files.append(argv[index + 1])
            index += 2
            continue
        if arg.startswith(OVERRIDES_FLAG + "="):
            files.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        index += 1
    hparams_file, run_opts, overrides = sb.parse_arguments(rest)
    if not files:
        return hparams_file, run_opts, overrides
    yaml = ruamel.yaml.YAML()
    merged = {}
    for path in files:
        merged.update(_read_overrides_file(path))
    if overrides:
        merged.update(yaml.load(overrides) or {})
    stream = io.StringIO()
    yaml.dump(merged, stream)
    return hparams_file, run_opts, stream.getvalue()


# ---------------------------------------------------------------------------
# Loading an exported enhancer (e.g. the frozen stage 1 of stage 2)
# ---------------------------------------------------------------------------
def load_enhancer_folder(folder, device="cpu"):
    """Load a folder written by :func:`speechbrain_elbo.export.export_enhancer`.

    The networks are built from the folder's ``hyperparams.yaml`` and their
    weights loaded by its SpeechBrain ``Pretrainer`` (strictly, with the
    checksums of the export checked).

    Arguments
    ---------
    folder : str or pathlib.Path
        The exported model folder.
    device : str
        Where to put the networks.

    Returns
    -------
    types.SimpleNamespace
        ``score_model`` (a frozen :class:`~speechbrain_elbo.score.ScoreModel`
        in eval mode), ``backbone``, ``sde``, ``transform``, ``sampler``,
        ``refiner`` (or None), ``sample_rate``, ``checksums`` and
        ``folder``.
    """
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_elbo.export import HPARAMS_FILE, file_sha256

    folder = pathlib.Path(folder).absolute()
    hparams_path = folder / HPARAMS_FILE
    if not hparams_path.is_file():
        raise FileNotFoundError(
            f"{hparams_path} not found: {folder} is not an exported model. "
            "Run stage 1 to completion first (it exports to its "
            "export_folder), or point stage1_folder at that folder."
        )
    with open(hparams_path, encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle, {"pretrained_path": str(folder)})
    checksums = dict(hparams.get("checksums") or {})
    for name, digest in checksums.items():
        actual = file_sha256(folder / name)
        if actual != digest:
            raise ValueError(
                f"{folder / name} does not match the SHA-256 recorded in "
                f"{hparams_path}: the file is corrupt or was replaced. "
                "Export the model again."
            )
    pretrainer = hparams["pretrainer"]
    pretrainer.set_collect_in(None)
    pretrainer.collect_files(default_source=str(folder))
    pretrainer.load_collected()
    backbone = hparams["score_backbone"].to(device).eval()
    score_model = ScoreModel(backbone, hparams["sde"]).to(device).eval()
    score_model.requires_grad_(False)
    refiner = hparams.get("refiner")
    if refiner is not None:
        refiner = refiner.to(device).eval().requires_grad_(False)
    return SimpleNamespace(
        score_model=score_model,
        backbone=backbone,
        sde=hparams["sde"],
        transform=hparams["transform"],
        sampler=hparams["sampler"],
        refiner=refiner,
        sample_rate=int(hparams["sample_rate"]),
        checksums=checksums,
        folder=folder,
    )


# ---------------------------------------------------------------------------
# Brains
# ---------------------------------------------------------------------------
class EnhancementBrain(sb.Brain):
    """What the two stages share: EMA, non-finite losses, logs, checkpoints.

    Sub-classes set ``net_key``, the key of the trained network in
    ``modules``, and implement the forward pass and the stage-specific
    evaluation. Required hparams: ``ema_decay``, ``sample_rate``,
    ``valid_enhance_utterances``, ``train_logger`` and ``seed``.

    Validation keeps two checkpoints: the best by PESQ-WB on the enhanced
    validation files (by loss when ``valid_enhance_utterances`` is 0) and the
    most recent. The EMA copy is checkpointed, so resuming restores it.
    After a test, ``test_utterances`` holds the rows of the per-utterance
    test CSV (those of every rank), e.g. to average them in bins of a test
    condition with :func:`speechbrain_elbo.metrics.metric_bins`.
    """

    net_key = None
    _required = ("ema_decay", "sample_rate", "valid_enhance_utterances", "seed")

    def __init__(
        self,
        modules=None,
        opt_class=None,
        hparams=None,
        run_opts=None,
        checkpointer=None,
    ):
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        missing = [k for k in self._required if not hasattr(self.hparams, k)]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the hparams {missing}; add them "
                "to the YAML file."
            )
        if self.net_key not in self.modules:
            raise ValueError(
                f"{type(self).__name__} trains modules[{self.net_key!r}]; "
                f"the YAML's modules are {list(self.modules)}."
            )
        # SpeechBrain clips with max_grad_norm unconditionally; a value <= 0
        # would flip the gradients, so it means "no clipping" here.
        if self.max_grad_norm is None or self.max_grad_norm <= 0:
            self.max_grad_norm = math.inf
        self.ema = make_ema(self.modules[self.net_key], self.hparams.ema_decay)
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("ema", self.ema)
        self.epoch_batches = 0
        self.skipped_batches = 0
        self.train_stats = None
        # per-utterance test scores of every rank, set by the test
        self.test_utterances = []

    # -- the trained network and its EMA ---------------------------------
    @property
    def net(self):
        """The trained network as called in training (DDP-wrapped or not)."""
        return self.modules[self.net_key]

    @property
    def ema_net(self):
        """The EMA network, used for validation, test and export."""
        return self.ema.module

    def on_fit_start(self):
        """Initialise, resume, then apply an ``lr`` changed since the save.

        A resumed optimiser brings back the learning rate it was saved with;
        a user who resumes with ``--lr=...`` means the new one. With an
        ``lr_annealing`` scheduler in the hparams (SpeechBrain's convention)
        the scheduler owns the rate and the resumed one is kept.
        """
        super().on_fit_start()
        lr = getattr(self.hparams, "lr", None)
        if lr is None or self.optimizer is None:
            return
        if getattr(self.hparams, "lr_annealing", None) is not None:
            return
        for group in self.optimizer.param_groups:
            if group["lr"] != lr:
                logger.info(
                    "Learning rate %.3g -> %.3g (hparams lr)", group["lr"], lr
                )
                group["lr"] = lr

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        """Update the EMA after each optimiser step."""
        if should_step:
            self.ema.update_parameters(unwrap_module(self.net))

    # -- non-finite losses -------------------------------------------------
    def _finite_on_all_ranks(self, loss):
        finite = torch.isfinite(loss.detach()).all().float()
        if is_distributed_initialized():
            finite = finite.to(self.device)
            torch.distributed.all_reduce(
                finite, op=torch.distributed.ReduceOp.MIN
            )
        return bool(finite.item())

    def fit_batch(self, batch):
        """One training step; a non-finite loss skips the step, with a warning.

        The check happens before ``backward`` and is agreed on by all DDP
        ranks, so every rank skips the same step (no hanging all-reduce).
        More than ``nonfinite_patience`` skipped batches in one epoch stop the
        training with an error.
        """
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            if not self._finite_on_all_ranks(loss):
                self._skip_nonfinite(batch, loss)
                return loss.detach().cpu()
            scaled = self.scaler.scale(loss / self.grad_accumulation_factor)
            scaled.backward()
        if should_step:
            self.optimizers_step()
        self.epoch_batches += 1
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return loss.detach().cpu()

    def _skip_nonfinite(self, batch, loss):
        self.nonfinite_count += 1
        self.skipped_batches += 1
        self.zero_grad(set_to_none=True)
        ids = list(getattr(batch, "id", []))
        value = loss.detach().float().cpu().item()
        logger.warning(
            f"Non-finite training loss ({value}) for batch {ids}: skipping "
            f"this step without updating the weights "
            f"({self.nonfinite_count}/{self.nonfinite_patience} this epoch)."
        )
        if self.nonfinite_count > self.nonfinite_patience:
            raise ValueError(
                f"The training loss was not finite for "
                f"{self.nonfinite_count} batches in this epoch (patience "
                f"{self.nonfinite_patience}, --nonfinite_patience). Lower the "
                "learning rate, enable gradient clipping (--max_grad_norm) "
                "or train in fp32."
            )

    # -- stages ------------------------------------------------------------
    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage counters and metrics."""
        if stage == sb.Stage.TRAIN:
            self.epoch_batches = 0
            self.skipped_batches = 0
        else:
            self.metrics = EnhancementMetrics(self.hparams.sample_rate)
            self.enhanced_count = 0
            self.eval_generator = torch.Generator(
                device=self.device
            ).manual_seed(int(self.hparams.seed))

    def valid_stats(self, stage_loss):
        """The statistics logged after validation."""
        return {"loss": stage_loss, **self.metrics.summarize()}

    def checkpoint_key(self):
        """("pesq", "max") or ("loss", "min"): how checkpoints are ranked."""
        if int(self.hparams.valid_enhance_utterances) > 0:
            return "pesq", "max"
        return "loss", "min"

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch and save the best and the last checkpoint."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {
                "loss": stage_loss,
                "batches": gather_objects(self.epoch_batches),
            }
            if self.skipped_batches:
                self.train_stats["skipped"] = self.skipped_batches
            return
        if stage == sb.Stage.VALID:
            stats = self.valid_stats(stage_loss)
            meta = {"loss": float(stage_loss), "epoch": int(epoch)}
            pesq = stats.get("pesq", float("nan"))
            meta["pesq"] = float(pesq) if math.isfinite(pesq) else 0.0
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            if self.checkpointer is not None:
                key, order = self.checkpoint_key()
                self.checkpointer.save_and_keep_only(
                    meta=meta,
                    max_keys=[key] if order == "max" else [],
                    min_keys=[key] if order == "min" else [],
                    importance_keys=[],
                    num_to_keep=1,
                )
            return
        self.end_test(stage_loss)

    def end_test(self, stage_loss):
        """Summarise and write the test results (sub-classes)."""
        raise RuntimeError(
            f"{type(self).__name__} does not define a test stage."
        )

    def evaluate(
        self,
        test_set,
        max_key=None,
        min_key=None,
        progressbar=None,
        test_loader_kwargs=None,
    ):
        """Test with the best checkpoint (by :meth:`checkpoint_key`).

        Test utterances are split across DDP ranks (a ``DistributedSampler``
        without shuffling); their scores are gathered before writing.
        """
        loader_kwargs = dict(test_loader_kwargs or {})
        if max_key is None and min_key is None:
            key, order = self.checkpoint_key()
            max_key = key if order == "max" else None
            min_key = key if order == "min" else None
        if (
            is_distributed_initialized()
            and not isinstance(test_set, torch.utils.data.DataLoader)
            and "sampler" not in loader_kwargs
        ):
            loader_kwargs["sampler"] = torch.utils.data.DistributedSampler(
                test_set, shuffle=False
            )
        return super().evaluate(
            test_set,
            max_key=max_key,
            min_key=min_key,
            progressbar=progressbar,
            test_loader_kwargs=loader_kwargs,
        )

    # -- shared pieces of the forward pass ---------------------------------
    def _waveforms(self, batch):
        noisy, lengths = batch.noisy_sig
        clean, _ = batch.clean_sig
        return (
            noisy.to(self.device),
            clean.to(self.device),
            lengths.to(self.device),
        )

    def _score_valid(self, ids, estimate, clean, lengths):
        """Metrics on the first ``valid_enhance_utterances`` of validation."""
        self.metrics.append(ids, estimate, clean, lengths)
        self.enhanced_count += len(ids)


class ScoreBrain(EnhancementBrain):
    """Stage 1: the score model (METHOD.md s. 2-5).

    ``modules["score_model"]`` is a :class:`~speechbrain_elbo.score.ScoreModel`
    (backbone + SDE). Required hparams besides those of
    :class:`EnhancementBrain`: ``transform``, ``sde``, ``loss_fn`` (from
    :func:`build_score_loss`), ``sampler`` (test), ``valid_sampler``. For the
    test files: ``test_csv``, ``test_utterance_csv``, optional
    ``save_enhanced``/``enhanced_folder``.

    Example
    -------
    >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
    >>> from speechbrain_elbo.spectral import SpectralTransform
    >>> from speechbrain_elbo.sampling import Sampler
    >>> sde = OUVESDE(GeometricGNS())
    >>> class Net(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = torch.nn.Conv2d(4, 2, 1)
    ...     def forward(self, x, cond):
    ...         return self.conv(x)
    >>> hparams = dict(sde=sde, transform=SpectralTransform(),
    ...     loss_fn=build_score_loss("sigma2", sde),
    ...     sampler=Sampler("euler", 1), valid_sampler=Sampler("euler", 1),
    ...     ema_decay=0.9, sample_rate=16000, valid_enhance_utterances=0,
    ...     seed=0)
    >>> brain = ScoreBrain({"score_model": ScoreModel(Net(), sde)},
    ...     lambda p: torch.optim.Adam(p, 1e-3), hparams,
    ...     run_opts={"device": "cpu"})
    >>> brain.ema_net.backbone.conv.weight.requires_grad
    False
    """

    net_key = "score_model"
    _required = EnhancementBrain._required + (
        "transform",
        "sde",
        "loss_fn",
        "sampler",
        "valid_sampler",
    )

    def compute_forward(self, batch, stage):
        """Peak-normalise, encode; returns the spectrograms and frame mask.

        The network itself runs in :meth:`compute_objectives`, inside the
        loss (which draws t and x_t).
        """
        noisy, clean, lengths = self._waveforms(batch)
        noisy_n, clean_n, scale = peak_normalize(noisy, clean, lengths)
        transform = self.hparams.transform
        return {
            "y": transform.encode(noisy_n, lengths),
            "x0": transform.encode(clean_n, lengths),
            "mask": frame_mask(lengths, noisy.shape[-1], transform.hop_length),
            "scale": scale,
        }

    def compute_objectives(self, predictions, batch, stage):
        """The selected score loss: the trained net in training, EMA else."""
        model = self.net if stage == sb.Stage.TRAIN else self.ema_net
        generator = None if stage == sb.Stage.TRAIN else self.eval_generator
        return self.hparams.loss_fn(
            model,
            predictions["x0"],
            predictions["y"],
            generator=generator,
            mask=predictions["mask"],
        )

    def enhance(self, y, scale, length, lengths, sampler, generator):
        """Sample x_hat with the EMA model; returns (waveform, x_hat, nfe).

        As at inference, y is zero-padded to the network's frame multiple
        for sampling and the estimate cropped back.
        """
        y, frames = pad_frames(y, frame_multiple_of(self.ema_net))
        x_hat, nfe = sampler(
            self.ema_net, self.hparams.sde, y, generator=generator
        )
        x_hat = crop_frames(x_hat, frames)
        wav = self.hparams.transform.decode(x_hat, length, lengths) * scale
        return wav, x_hat, nfe

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        """Validation loss (+ metrics on a few files) or test enhancement."""
        if stage == sb.Stage.TEST:
            return self._test_batch(batch)
        with self.evaluation_ctx:
            predictions = self.compute_forward(batch, stage)
            loss = self.compute_objectives(predictions, batch, stage)
            wanted = int(self.hparams.valid_enhance_utterances)
            if self.enhanced_count < wanted:
                noisy, clean, lengths = self._waveforms(batch)
                keep = min(wanted - self.enhanced_count, noisy.shape[0])
                wav, _, _ = self.enhance(
                    predictions["y"][:keep],
                    predictions["scale"][:keep],
                    noisy.shape[-1],
                    lengths[:keep],
                    self.hparams.valid_sampler,
                    self.eval_generator,
                )
                self._score_valid(
                    batch.id[:keep], wav, clean[:keep], lengths[:keep]
                )
        return loss.detach().cpu()

    # -- test ----------------------------------------------------------------
    def on_stage_start(self, stage, epoch=None):
        """Also prepare the per-system test records."""
        super().on_stage_start(stage, epoch)
        if stage == sb.Stage.TEST:
            self.test_metrics = {
                "noisy": EnhancementMetrics(self.hparams.sample_rate),
                "stage1": EnhancementMetrics(self.hparams.sample_rate),
            }
            self.test_timing = {}

    def _test_batch(self, batch):
        noisy, clean, lengths = self._waveforms(batch)
        transform = self.hparams.transform
        sample_rate = self.hparams.sample_rate
        with self.evaluation_ctx:
            _synchronize(self.device)
            start = time.perf_counter()
            noisy_n, _, scale = peak_normalize(noisy, None, lengths)
            y = transform.encode(noisy_n, lengths)
            generator = torch.Generator(device=self.device).manual_seed(
                utterance_seed(self.hparams.seed, batch.id[0])
            )
            wav, _, nfe = self.enhance(
                y,
                scale,
                noisy.shape[-1],
                lengths,
                self.hparams.sampler,
                generator,
            )
            _synchronize(self.device)
            seconds = time.perf_counter() - start
        audio_seconds = (lengths * noisy.shape[-1]).sum().item() / sample_rate
        self.test_metrics["noisy"].append(batch.id, noisy, clean, lengths)
        self.test_metrics["stage1"].append(batch.id, wav, clean, lengths)
        self.test_timing.setdefault("stage1", {})[tuple(batch.id)] = (
            nfe,
            seconds,
            audio_seconds,
        )
        self._save_enhanced(batch.id, wav, lengths, "stage1")
        return torch.tensor(0.0)

    def _save_enhanced(self, ids, wav, lengths, system):
        if not getattr(self.hparams, "save_enhanced", False):
            return
        import soundfile as sf

        folder = pathlib.Path(self.hparams.enhanced_folder) / system
        folder.mkdir(parents=True, exist_ok=True)
        valid = torch.round(lengths * wav.shape[-1]).long().tolist()
        for uid, signal, count in zip(
            ids, wav.float().cpu(), valid, strict=True
        ):
            sf.write(
                str(folder / f"{uid}.wav"),
                signal[:count].numpy(),
                self.hparams.sample_rate,
                subtype="FLOAT",
            )

    def end_test(self, stage_loss):
        """Gather across ranks; write the summary and per-utterance CSVs."""
        rows, utterances = _summarise_systems(
            self.test_metrics, self.test_timing
        )
        self.test_utterances = utterances
        self._write_test(rows, utterances)

    def _write_test(self, rows, utterances):
        for row in rows:
            stats = {
                k: row[k] for k in RESULT_FIELDS[1:] if row.get(k) is not None
            }
            self.hparams.train_logger.log_stats(
                stats_meta={"test": row["system"]}, test_stats=stats
            )
        write_csv(self.hparams.test_csv, rows, RESULT_FIELDS)
        write_csv(self.hparams.test_utterance_csv, utterances, UTTERANCE_FIELDS)
        if if_main_process():
            logger.info(f"Test results written to {self.hparams.test_csv}")

    def export(self, folder, model_card=None):
        """Export the EMA stage-1 model as a ``from_hparams`` folder."""
        from speechbrain_elbo.export import export_enhancer

        if if_main_process():
            export_enhancer(
                folder,
                self.ema_net.backbone,
                self.hparams.sde,
                self.hparams.transform,
                self.hparams.sampler,
                model_card=model_card,
                sample_rate=self.hparams.sample_rate,
            )
            logger.info(f"Stage-1 model exported to {folder}")
        ddp_barrier()


def _summarise_systems(metrics, timing):
    """Merge ranks; one summary row per system and per-utterance rows."""
    rows, utterances = [], []
    for system, stats in metrics.items():
        stats.merge_ranks()
        merged = {}
        for part in gather_objects(timing.get(system, {})):
            merged.update(part)
        summary = stats.summarize()
        row = {
            "system": system,
            "utterances": summary["count"],
            "pesq": summary["pesq"],
            "estoi": summary["estoi"],
            "si_sdr": summary["si_sdr"],
        }
        per_id = {}
        for ids, (nfe, seconds, audio_seconds) in merged.items():
            for uid in ids:
                per_id[uid] = (
                    nfe,
                    seconds / len(ids),
                    audio_seconds / len(ids),
                )
        if merged:
            total = sum(v[1] for v in per_id.values())
            audio = sum(v[2] for v in per_id.values())
            nfes = {v[0] for v in per_id.values()}
            row["nfe"] = (
                nfes.pop()
                if len(nfes) == 1
                else sum(v[0] for v in per_id.values()) / len(per_id)
            )
            row["rtf"] = total / audio if audio > 0 else float("nan")
        rows.append(row)
        for uid, scores in stats.per_utterance().items():
            record = {"id": uid, "system": system, **scores}
            if uid in per_id:
                nfe, seconds, audio_seconds = per_id[uid]
                record.update(
                    nfe=nfe, seconds=seconds, audio_seconds=audio_seconds
                )
            utterances.append(record)
    return rows, utterances


class RefinerBrain(EnhancementBrain):
    """Stage 2: the refinement model on cached stage-1 estimates.

    ``modules["refiner"]`` is the trained refiner; ``stage1`` is the frozen
    stage-1 model (:func:`load_enhancer_folder`). Training batches come from
    :func:`speechbrain_elbo.cache.make_refiner_datasets` (``xhat_spec``,
    ``noisy_spec``, ``clean_spec``, ``frame_mask``); test batches are whole
    waveforms (``noisy_sig``, ``clean_sig``). Required hparams besides those
    of :class:`EnhancementBrain`: ``spec_weight``, ``mag_weight`` and
    ``time_weight`` (of the :class:`RefinementLoss`), ``test_csv``,
    ``test_utterance_csv``, ``elbo_csv``, ``elbo_diffusion_samples``,
    ``elbo_reconstruction_samples``, ``elbo_utterances`` and
    ``decoder_fit_batches``.

    Arguments
    ---------
    stage1 : types.SimpleNamespace
        The frozen stage 1, as returned by :func:`load_enhancer_folder`.
    *args, **kwargs
        Passed to ``speechbrain.Brain``.
    """

    net_key = "refiner"
    _required = EnhancementBrain._required + (
        "spec_weight",
        "mag_weight",
        "time_weight",
        "test_csv",
        "test_utterance_csv",
        "elbo_csv",
        "elbo_diffusion_samples",
        "elbo_reconstruction_samples",
        "elbo_utterances",
        "decoder_fit_batches",
    )

    def __init__(self, *args, stage1=None, **kwargs):
        if stage1 is None:
            raise ValueError(
                "RefinerBrain needs the frozen stage-1 model: pass "
                "stage1=load_enhancer_folder(stage1_folder)."
            )
        super().__init__(*args, **kwargs)
        self.stage1 = stage1
        stage1.score_model.to(self.device)
        self.decoder_variances = None
        self.refine_loss = RefinementLoss(
            stage1.transform,
            spec_weight=self.hparams.spec_weight,
            mag_weight=self.hparams.mag_weight,
            time_weight=self.hparams.time_weight,
        )

    @property
    def transform(self):
        """The spectral transform of stage 1."""
        return self.stage1.transform

    def _spectrograms(self, batch):
        def complex_of(item):
            data = item.data.to(self.device).float()
            return torch.complex(data[:, :1], data[:, 1:])

        mask = batch.frame_mask.data.to(self.device)[:, None, None, :]
        return (
            complex_of(batch.xhat_spec),
            complex_of(batch.noisy_spec),
            complex_of(batch.clean_spec),
            mask,
        )

    def compute_forward(self, batch, stage):
        """Refine the cached stage-1 estimate (EMA refiner outside training)."""
        x_hat, y, x0, mask = self._spectrograms(batch)
        net = self.net if stage == sb.Stage.TRAIN else self.ema_net
        refined = net(x_hat, y)
        return {
            "refined": refined,
            "x_hat": x_hat,
            "y": y,
            "x0": x0,
            "mask": mask,
        }

    def compute_objectives(self, predictions, batch, stage):
        """The data-domain loss of METHOD.md s. 6."""
        refined = predictions["refined"].to(torch.complex64)
        return self.refine_loss(refined, predictions["x0"], predictions["mask"])

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        """Validation loss and metrics of refined crops, or the test."""
        if stage == sb.Stage.TEST:
            return self._test_batch(batch)
        with self.evaluation_ctx:
            predictions = self.compute_forward(batch, stage)
            loss = self.compute_objectives(predictions, batch, stage)
        wanted = int(self.hparams.valid_enhance_utterances)
        if self.enhanced_count < wanted:
            keep = min(wanted - self.enhanced_count, predictions["x0"].shape[0])
            mask = predictions["mask"][:keep]
            frames = mask.shape[-1]
            length = (frames - 1) * self.transform.hop_length
            lengths = mask.flatten(1).sum(-1) / frames
            decode = self.transform.decode
            clean = decode(predictions["x0"][:keep] * mask, length, lengths)
            refined = decode(
                predictions["refined"][:keep].to(torch.complex64) * mask,
                length,
                lengths,
            )
            stage1 = decode(predictions["x_hat"][:keep] * mask, length, lengths)
            ids = batch.id[:keep]
            self.stage1_valid_metrics.append(ids, stage1, clean, lengths)
            self._score_valid(ids, refined, clean, lengths)
        return loss.detach().cpu()

    def on_stage_start(self, stage, epoch=None):
        """Also track the stage-1 metrics of the validation crops."""
        super().on_stage_start(stage, epoch)
        self.stage1_valid_metrics = EnhancementMetrics(self.hparams.sample_rate)
        if stage == sb.Stage.TEST:
            rate = self.hparams.sample_rate
            self.test_metrics = {
                "noisy": EnhancementMetrics(rate),
                "stage1": EnhancementMetrics(rate),
                "stage1+2": EnhancementMetrics(rate),
            }
            self.test_timing = {}
            self.elbo_records = {"stage1": [], "stage1+2": []}

    def valid_stats(self, stage_loss):
        """Refined metrics, plus those of the cached stage-1 estimates."""
        stats = super().valid_stats(stage_loss)
        if len(self.stage1_valid_metrics):
            for name, value in self.stage1_valid_metrics.summarize().items():
                if name != "count":
                    stats[f"stage1_{name}"] = value
        return stats

    # -- decoder variance and test -------------------------------------------
    def evaluate(
        self,
        test_set,
        decoder_fit_set=None,
        max_key=None,
        min_key=None,
        progressbar=None,
        test_loader_kwargs=None,
    ):
        """Test the two stages; fit the ELBO decoder variances first.

        Arguments
        ---------
        test_set : Dataset or DataLoader
            Whole test utterances (``noisy_sig``, ``clean_sig``).
        decoder_fit_set : Dataset, optional
            Held-out data (the validation set of
            :func:`~speechbrain_elbo.cache.make_refiner_datasets`) on which
            the Gaussian decoder variances of stage 1 and stage 1+2 are
            fitted by maximum likelihood (METHOD.md s. 4). Without it the
            stage-1 default sigma_{t_eps}^2 / a_{t_eps}^2 is used for both.
        max_key, min_key, progressbar, test_loader_kwargs
            As in ``speechbrain.Brain.evaluate``.
        """
        self._decoder_fit_set = decoder_fit_set
        return super().evaluate(
            test_set,
            max_key=max_key,
            min_key=min_key,
            progressbar=progressbar,
            test_loader_kwargs=test_loader_kwargs,
        )

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Load the best checkpoint, then fit the decoder variances."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.decoder_variances = self.fit_decoder_variances(
            getattr(self, "_decoder_fit_set", None)
        )

    @torch.no_grad()
    def fit_decoder_variances(self, dataset):
        """Maximum-likelihood decoder variances on held-out crops.

        Returns
        -------
        dict
            ``{"stage1": v1, "stage1+2": v2, "source": str}``; v is the mean
            |x0 - m|^2 per complex bin with m the Tweedie estimate at t_eps
            (stage 1) or the refiner applied to it (stage 1+2).
        """
        sde = self.stage1.sde
        t_eps = torch.tensor(sde.t_eps)
        default = (sde.variance(t_eps) / sde.decay(t_eps) ** 2).item()
        if dataset is None:
            return {"stage1": default, "stage1+2": default, "source": "default"}
        loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=1)
        generator = torch.Generator(device=self.device).manual_seed(
            int(self.hparams.seed)
        )
        sums = {"stage1": 0.0, "stage1+2": 0.0}
        bins = 0.0
        limit = int(self.hparams.decoder_fit_batches)
        for index, batch in enumerate(loader):
            if index >= limit:
                break
            _, y, x0, mask = self._spectrograms(batch)
            count = float(mask.sum()) * x0.shape[1] * x0.shape[2]
            for name, decoder in (
                ("stage1", None),
                ("stage1+2", self._decoder),
            ):
                state = generator.get_state()
                variance = fit_decoder_variance(
                    self.stage1.score_model,
                    sde,
                    x0,
                    y,
                    decoder=decoder,
                    generator=generator,
                    mask=mask,
                )
                generator.set_state(state)
                sums[name] += variance * count
            bins += count
        if bins == 0:
            return {"stage1": default, "stage1+2": default, "source": "default"}
        fitted = {name: value / bins for name, value in sums.items()}
        fitted["source"] = (
            f"fitted on {min(limit, len(dataset))} validation crops"
        )
        logger.info(f"Decoder variances: {fitted}")
        return fitted

    def _decoder(self, x0_hat, y):
        return self.ema_net(x0_hat, y).to(torch.complex64)

    def _test_batch(self, batch):
        noisy, clean, lengths = self._waveforms(batch)
        transform = self.transform
        stage1 = self.stage1
        rate = self.hparams.sample_rate
        length = noisy.shape[-1]
        with self.evaluation_ctx:
            _synchronize(self.device)
            start = time.perf_counter()
            noisy_n, clean_n, scale = peak_normalize(noisy, clean, lengths)
            y = transform.encode(noisy_n, lengths)
            generator = torch.Generator(device=self.device).manual_seed(
                utterance_seed(self.hparams.seed, batch.id[0])
            )
            # as DiffusionEnhancement: pad for both networks, crop after
            multiple = frame_multiple_of(stage1.backbone, self.ema_net)
            y_pad, frames = pad_frames(y, multiple)
            x_hat, nfe = stage1.sampler(
                stage1.score_model, stage1.sde, y_pad, generator=generator
            )
            stage1_hat = crop_frames(x_hat, frames)
            wav1 = transform.decode(stage1_hat, length, lengths) * scale
            _synchronize(self.device)
            seconds1 = time.perf_counter() - start
            refined = self.ema_net(x_hat, y_pad).to(torch.complex64)
            refined = crop_frames(refined, frames)
            wav2 = transform.decode(refined, length, lengths) * scale
            _synchronize(self.device)
            seconds2 = time.perf_counter() - start
        audio = (lengths * length).sum().item() / rate
        key = tuple(batch.id)
        self.test_metrics["noisy"].append(batch.id, noisy, clean, lengths)
        self.test_metrics["stage1"].append(batch.id, wav1, clean, lengths)
        self.test_metrics["stage1+2"].append(batch.id, wav2, clean, lengths)
        self.test_timing.setdefault("stage1", {})[key] = (nfe, seconds1, audio)
        self.test_timing.setdefault("stage1+2", {})[key] = (
            nfe + 1,
            seconds2,
            audio,
        )
        self._elbo_batch(batch, clean_n, y, lengths)
        return torch.tensor(0.0)

    def _elbo_batch(self, batch, clean_n, y, lengths):
        limit = self.hparams.elbo_utterances
        done = len(self.elbo_records["stage1"])
        if limit is not None:
            # the test utterances are split across ranks; so is the budget
            world = 1
            if is_distributed_initialized():
                world = torch.distributed.get_world_size()
            if done >= math.ceil(int(limit) / world):
                return
        x0 = self.transform.encode(clean_n, lengths)
        mask = frame_mask(lengths, clean_n.shape[-1], self.transform.hop_length)
        seed = utterance_seed(self.hparams.seed, batch.id[0], sample=1)
        for name, decoder in (("stage1", None), ("stage1+2", self._decoder)):
            # the same seed: identical t, z draws, so only L_rec differs
            generator = torch.Generator(device=self.device).manual_seed(seed)
            terms = negative_elbo(
                self.stage1.score_model,
                self.stage1.sde,
                x0,
                y,
                diffusion_samples=int(self.hparams.elbo_diffusion_samples),
                reconstruction_samples=int(
                    self.hparams.elbo_reconstruction_samples
                ),
                decoder=decoder,
                decoder_variance=self.decoder_variances[name],
                generator=generator,
                mask=mask,
            )
            for index, uid in enumerate(batch.id):
                self.elbo_records[name].append(
                    {
                        "id": uid,
                        "prior": terms.prior[index].item(),
                        "diffusion": terms.diffusion[index].item(),
                        "reconstruction": terms.reconstruction[index].item(),
                        "stderr": terms.stderr[index].item(),
                    }
                )

    def end_test(self, stage_loss):
        """Write noisy / stage 1 / stage 1+2 with the ELBO terms."""
        rows, utterances = _summarise_systems(
            self.test_metrics, self.test_timing
        )
        self.test_utterances = utterances
        elbo_rows = []
        for row in rows:
            name = row["system"]
            if name not in self.elbo_records:
                continue
            records = {}
            for part in gather_objects(self.elbo_records[name]):
                records.update({r["id"]: r for r in part})
            if not records:
                continue
            count = len(records)
            values = list(records.values())
            prior = sum(r["prior"] for r in values) / count
            diffusion = sum(r["diffusion"] for r in values) / count
            reconstruction = sum(r["reconstruction"] for r in values) / count
            stderr = math.sqrt(sum(r["stderr"] ** 2 for r in values)) / count
            row.update(
                neg_elbo=prior + diffusion + reconstruction,
                elbo_prior=prior,
                elbo_diffusion=diffusion,
                elbo_reconstruction=reconstruction,
                elbo_stderr=stderr,
                elbo_utterances=count,
                decoder_variance=self.decoder_variances[name],
            )
            for record in values:
                elbo_rows.append(
                    {
                        "id": record["id"],
                        "system": name,
                        "neg_elbo": record["prior"]
                        + record["diffusion"]
                        + record["reconstruction"],
                        **{
                            k: record[k]
                            for k in (
                                "prior",
                                "diffusion",
                                "reconstruction",
                                "stderr",
                            )
                        },
                    }
                )
        for row in rows:
            stats = {
                k: row[k] for k in RESULT_FIELDS[1:] if row.get(k) is not None
            }
            self.hparams.train_logger.log_stats(
                stats_meta={"test": row["system"]}, test_stats=stats
            )
        if if_main_process():
            logger.info(
                "ELBO terms in bits per real dimension; decoder variance "
                f"{self.decoder_variances['source']}."
            )
        write_csv(self.hparams.test_csv, rows, RESULT_FIELDS)
        write_csv(self.hparams.test_utterance_csv, utterances, UTTERANCE_FIELDS)
        write_csv(
            self.hparams.elbo_csv,
            elbo_rows,
            [
                "id",
                "system",
                "neg_elbo",
                "prior",
                "diffusion",
                "reconstruction",
                "stderr",
            ],
        )

    def export(self, folder, model_card=None):
        """Export stage 1 + the EMA refiner as one ``from_hparams`` folder."""
        from speechbrain_elbo.export import export_enhancer

        if if_main_process():
            export_enhancer(
                folder,
                self.stage1.backbone,
                self.stage1.sde,
                self.stage1.transform,
                self.stage1.sampler,
                refiner=self.ema_net,
                model_card=model_card,
                sample_rate=self.hparams.sample_rate,
            )
            logger.info(f"Two-stage model exported to {folder}")
        ddp_barrier()


# ---------------------------------------------------------------------------
# Pipeline drivers: which command-line arguments belong to which stage
# ---------------------------------------------------------------------------
def _run_option_arities():
    parser = sb.RunOptions._create_parser()
    arities = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                arities[flag[2:]] = 0 if action.nargs == 0 else 1
    return arities


def _yaml_keys(path):
    yaml = ruamel.yaml.YAML()
    with open(path, encoding="utf-8") as handle:
        tree = yaml.load(handle) or {}
    return set(tree)


def stage_arguments(args, hparams_file, other_files=()):
    """The command-line arguments of a multi-stage run meant for one stage.

    SpeechBrain run options (``--device``, ``--precision``...) go to every
    stage; a ``--key=value`` override goes to the stages whose YAML file has
    ``key``; ``--overrides_file`` goes everywhere. ``--STAGE.key=value``,
    with STAGE the stem of a stage's YAML file (``score``, ``refiner``),
    goes to that stage only and takes precedence there over ``--key``
    (``--number_of_epochs=60 --refiner.number_of_epochs=10``). An override
    that no stage knows is an error (a typo would otherwise be ignored).

    Arguments
    ---------
    args : list of str
        Extra arguments, ``--key=value`` or ``--key value``.
    hparams_file : str
        The YAML file of the stage.
    other_files : sequence of str
        The YAML files of the other stages.

    Returns
    -------
    list of str
        The arguments for this stage, in their original order.

    Example
    -------
    >>> tmp = getfixture("tmp_path")
    >>> _ = (tmp / "a.yaml").write_text("lr: 1\\nloss: x\\n")
    >>> _ = (tmp / "b.yaml").write_text("lr: 2\\n")
    >>> args = ["--lr=3", "--loss", "y", "--device=cpu", "--noprogressbar"]
    >>> stage_arguments(args, tmp / "b.yaml", [tmp / "a.yaml"])
    ['--lr=3', '--device=cpu', '--noprogressbar']
    >>> args = ["--lr=3", "--b.lr", "4", "--a.loss=z"]
    >>> stage_arguments(args, tmp / "b.yaml", [tmp / "a.yaml"])
    ['--lr', '4']
    >>> stage_arguments(args, tmp / "a.yaml", [tmp / "b.yaml"])
    ['--lr=3', '--loss=z']
    >>> stage_arguments(["--lrr=3"], tmp / "b.yaml", [tmp / "a.yaml"])
    Traceback (most recent call last):
    ...
    ValueError: --lrr is neither a SpeechBrain run option nor a key of ...
    """
    run_options = _run_option_arities()
    run_options[OVERRIDES_FLAG[2:]] = 1
    stage = pathlib.Path(hparams_file).stem
    keys = {stage: _yaml_keys(hparams_file)}
    for path in other_files:
        keys[pathlib.Path(path).stem] = _yaml_keys(path)
    mine = keys[stage]
    everyone = set().union(*keys.values())
    files = [str(hparams_file), *map(str, other_files)]
    groups, index = [], 0  # (key or None for run options, prefixed, args)
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ValueError(
                f"Unexpected argument {arg!r}: overrides are --key=value."
            )
        name, has_value, value = arg[2:].partition("=")
        if name in run_options:
            arity = 0 if has_value else run_options[name]
        else:
            arity = 0 if has_value else 1
        group = args[index : index + 1 + arity]
        if len(group) < 1 + arity:
            raise ValueError(f"{arg} needs a value.")
        index += 1 + arity
        if name in run_options:
            groups.append((None, False, group))
            continue
        prefix, dot, key = name.rpartition(".")
        if dot and prefix in keys:
            if key not in keys[prefix]:
                raise ValueError(
                    f"--{name}: {key} is not a key of the {prefix} stage's "
                    "YAML file; check the spelling."
                )
            if prefix == stage:
                unprefixed = f"--{key}={value}" if has_value else f"--{key}"
                groups.append((key, True, [unprefixed, *group[1:]]))
            continue
        if name not in everyone:
            raise ValueError(
                f"--{name} is neither a SpeechBrain run option nor a key of "
                f"{files}; check the spelling."
            )
        if name in mine:
            groups.append((name, False, group))
    prefixed = {key for key, is_prefixed, _ in groups if is_prefixed}
    selected = []
    for key, is_prefixed, group in groups:
        if key is None or is_prefixed or key not in prefixed:
            selected.extend(group)
    return selected


def _main(argv=None):
    """``python -m speechbrain_elbo.training stage-args FILE [OTHERS] -- ARGS``.

    Prints the arguments of ``FILE``'s stage, NUL-separated (for
    ``mapfile -d ''`` in a shell script).
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "stage-args" or "--" not in argv:
        raise SystemExit(
            "usage: python -m speechbrain_elbo.training stage-args "
            "HPARAMS_FILE [OTHER_HPARAMS_FILES...] -- [ARGS...]"
        )
    split = argv.index("--")
    files, args = argv[1:split], argv[split + 1 :]
    try:
        selected = stage_arguments(args, files[0], files[1:])
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    sys.stdout.write("".join(arg + "\0" for arg in selected))


if __name__ == "__main__":
    _main()
