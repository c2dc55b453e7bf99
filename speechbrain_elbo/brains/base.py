"""What the two Brains share: EMA, non-finite losses, logs, checkpoints, test.

- :func:`make_ema`: the exponential moving average (EMA) of the weights
  of the network inside a DDP wrapper that validation, test and export use;
- :class:`EnhancementBrain`: the ``speechbrain.Brain`` of both stages, with
  the EMA update after each optimiser step, non-finite losses skipped on
  every DDP rank at once, the best and the last checkpoint (and intra-epoch
  ones, ``ckpt_interval_minutes``) from which a killed run resumes as if
  never stopped, test utterances split across ranks, and the test summary
  written by the main process (:data:`RESULT_FIELDS`,
  :data:`UTTERANCE_FIELDS`).

Example
-------
>>> net = torch.nn.Linear(2, 2)
>>> ema = make_ema(torch.nn.DataParallel(net), decay=0.9)
>>> ema.module is not net, ema.module.weight.requires_grad
(True, False)
"""

import dataclasses
import math

import speechbrain as sb
import torch
import yaml
from speechbrain.utils.distributed import (
    ddp_barrier,
    if_main_process,
    is_distributed_initialized,
)
from speechbrain.utils.logger import get_logger
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from speechbrain_elbo.checkpoints import RandomState
from speechbrain_elbo.fileio import write_csv_atomic
from speechbrain_elbo.metrics import EnhancementMetrics, gather_objects
from speechbrain_elbo.pipeline import unwrap_module, utterance_seed

logger = get_logger(__name__)

__all__ = [
    "RESULT_FIELDS",
    "UTTERANCE_FIELDS",
    "unwrap_module",
    "make_ema",
    "interval_run_opts",
    "EnhancementBrain",
    "summarise_systems",
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


#: SpeechBrain's run options of intra-epoch checkpoints (mutually exclusive).
INTERVAL_OPTIONS = ("ckpt_interval_minutes", "ckpt_interval_steps")


def interval_run_opts(hparams, run_opts):
    """Run options where a command-line checkpoint interval replaces the
    YAML's other one.

    SpeechBrain takes ``ckpt_interval_minutes`` and ``ckpt_interval_steps``
    from the YAML file or the command line (which wins) and stops when both
    are positive. The recipes' YAML files set ``ckpt_interval_minutes``; a
    run given ``--ckpt_interval_steps=N`` (and not the other) means steps
    instead, so the YAML's minutes become 0.

    Arguments
    ---------
    hparams : dict or None
        The hparams given to the Brain.
    run_opts : dict, speechbrain.RunOptions or None
        The run options given to the Brain.

    Returns
    -------
    speechbrain.RunOptions or the ``run_opts`` given (None, or unchanged)

    Example
    -------
    >>> opts = interval_run_opts({"ckpt_interval_minutes": 15},
    ...                          {"ckpt_interval_steps": 100})
    >>> opts.ckpt_interval_minutes, opts.ckpt_interval_steps
    (0, 100)
    """
    if run_opts is None or not hparams:
        return run_opts
    if isinstance(run_opts, dict):
        run_opts = sb.RunOptions.from_dictionary(run_opts)
    given = [
        key
        for key in INTERVAL_OPTIONS
        if key in run_opts.overridden_args and run_opts[key] > 0
    ]
    if len(given) != 1:
        return run_opts
    other = next(key for key in INTERVAL_OPTIONS if key not in given)
    if other in run_opts.overridden_args or not hparams.get(other):
        return run_opts
    logger.info(f"--{given[0]} replaces the YAML's {other}.")
    return dataclasses.replace(
        run_opts,
        **{other: 0, "overridden_args": {*run_opts.overridden_args, other}},
    )


@sb.utils.checkpoints.register_checkpoint_hooks
class EnhancementBrain(sb.Brain):
    """What the two stages share: EMA, non-finite losses, logs, checkpoints.

    Sub-classes set ``net_key``, the key of the trained network in
    ``modules``, and ``test_systems``, the rows of their test summary;
    they implement the forward pass and the test of one batch (which calls
    :meth:`record_test`). Required hparams: ``ema_decay``, ``sample_rate``,
    ``valid_enhance_utterances``, ``train_logger`` and ``seed``; the test
    writes ``test_csv`` and ``test_utterance_csv``.

    Validation keeps two checkpoints: the best by PESQ-WB on the enhanced
    validation files (by loss when ``valid_enhance_utterances`` is 0) and the
    most recent. SpeechBrain's ``ckpt_interval_minutes`` (or
    ``ckpt_interval_steps``) adds an intra-epoch checkpoint, replaced by the
    next one (:func:`interval_run_opts`: one given on the command line
    replaces the YAML's other one). A checkpoint holds what a resumed run
    needs to continue as if never stopped: weights, EMA copy, optimiser,
    epoch counter, the position in the epoch (SpeechBrain's saveable
    training loader, fed by its own seeded ``generator``), the batch counts
    of the epoch and torch's random generator states
    (:class:`~speechbrain_elbo.checkpoints.RandomState`).
    After a test, ``test_utterances`` holds the rows of the per-utterance
    test CSV (those of every rank), e.g. to average them in bins of a test
    condition with :func:`speechbrain_elbo.metrics.metric_bins`.

    The Brain is DDP-correct: the trained network is called through
    ``self.modules``, the EMA copy is made of the unwrapped module, a
    non-finite loss is detected on every rank before ``backward`` so that all
    ranks skip the same step, test utterances are split across ranks and
    their scores gathered, and only the main process writes files.
    """

    net_key = None
    test_systems = ("noisy", "stage1")
    exported_name = "Model"
    _required = ("ema_decay", "sample_rate", "valid_enhance_utterances", "seed")

    def __init__(
        self,
        modules=None,
        opt_class=None,
        hparams=None,
        run_opts=None,
        checkpointer=None,
    ):
        run_opts = interval_run_opts(hparams, run_opts)
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
            # optional: checkpoints from before it was saved still load
            self.checkpointer.add_recoverable(
                "rng", RandomState(self.device), optional_load=True
            )
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

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """SpeechBrain's loader; the training one gets its own generator.

        A ``DataLoader`` draws a seed from its ``generator`` each time an
        epoch's iteration starts, from torch's global generator when it has
        none. Its own generator (seeded with the hparams' ``seed``) keeps
        the global one's draws those of the training steps, which
        :class:`~speechbrain_elbo.checkpoints.RandomState` restores on a
        resume.
        """
        if stage == sb.Stage.TRAIN and "generator" not in loader_kwargs:
            loader_kwargs["generator"] = torch.Generator().manual_seed(
                int(self.hparams.seed)
            )
        return super().make_dataloader(
            dataset, stage, ckpt_prefix=ckpt_prefix, **loader_kwargs
        )

    @sb.utils.checkpoints.mark_as_saver
    def _save(self, path):
        """SpeechBrain's counters, plus the epoch's batch counts."""
        super()._save(path)
        with open(path, encoding="utf-8") as handle:
            state = yaml.safe_load(handle)
        state["epoch_batches"] = self.epoch_batches
        state["skipped_batches"] = self.skipped_batches
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(yaml.dump(state))

    @sb.utils.checkpoints.mark_as_loader
    def _recover(self, path, end_of_epoch):
        super()._recover(path, end_of_epoch)
        with open(path, encoding="utf-8") as handle:
            state = yaml.safe_load(handle)
        self.epoch_batches = int(state.get("epoch_batches", 0))
        self.skipped_batches = int(state.get("skipped_batches", 0))

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
        """Reset the per-stage counters and metrics.

        An epoch resumed from an intra-epoch checkpoint (SpeechBrain's
        ``step`` is then not 0) keeps the batch counts it was saved with.
        """
        if stage == sb.Stage.TRAIN:
            if self.step == 0:
                self.epoch_batches = 0
                self.skipped_batches = 0
            return
        self.metrics = EnhancementMetrics(self.hparams.sample_rate)
        self.enhanced_count = 0
        self.eval_generator = torch.Generator(device=self.device).manual_seed(
            int(self.hparams.seed)
        )
        if stage == sb.Stage.TEST:
            rate = self.hparams.sample_rate
            self.test_metrics = {
                name: EnhancementMetrics(rate) for name in self.test_systems
            }
            self.test_timing = {}

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

    @torch.no_grad()
    def evaluate_batch(self, batch, stage):
        """Validation loss (+ metrics of the first validation utterances),
        or the test of a batch (:meth:`_test_batch`)."""
        if stage == sb.Stage.TEST:
            return self._test_batch(batch)
        with self.evaluation_ctx:
            predictions = self.compute_forward(batch, stage)
            loss = self.compute_objectives(predictions, batch, stage)
            wanted = int(self.hparams.valid_enhance_utterances)
            if self.enhanced_count < wanted:
                count = wanted - self.enhanced_count
                self.score_valid_batch(batch, predictions, count)
        return loss.detach().cpu()

    def score_valid_batch(self, batch, predictions, count):
        """Enhance and score up to ``count`` utterances of a validation
        batch, for the first ``valid_enhance_utterances`` (sub-classes)."""
        raise NotImplementedError

    def _score_valid(self, ids, estimate, clean, lengths):
        """Metrics on the first ``valid_enhance_utterances`` of validation."""
        self.metrics.append(ids, estimate, clean, lengths)
        self.enhanced_count += len(ids)

    def _test_batch(self, batch):
        """Enhance a batch of whole test utterances; :meth:`record_test`."""
        raise NotImplementedError

    # -- test ----------------------------------------------------------------
    def test_generator(self, batch):
        """The generator of a test batch, seeded by its first utterance id.

        :func:`~speechbrain_elbo.pipeline.utterance_seed` of the hparams'
        ``seed``: the same draws on any rank and in any order, and those of
        the exported model called with that seed.
        """
        seed = utterance_seed(self.hparams.seed, batch.id[0])
        return torch.Generator(device=self.device).manual_seed(seed)

    def record_test(self, batch, noisy, clean, lengths, enhanced):
        """Score the noisy input and the enhanced waveforms of a test batch.

        Arguments
        ---------
        batch : PaddedBatch
            The test batch (its ``id``).
        noisy, clean : torch.Tensor
            Waveforms (B, L).
        lengths : torch.Tensor
            Relative lengths (B,).
        enhanced : speechbrain_elbo.pipeline.Enhanced
            What :func:`~speechbrain_elbo.pipeline.enhance_waveforms`
            returned: system ``stage1`` and, with a refiner, ``stage1+2``
            (one more network evaluation).
        """
        ids = batch.id
        audio = (lengths * noisy.shape[-1]).sum().item()
        audio_seconds = audio / self.hparams.sample_rate
        self.test_metrics["noisy"].append(ids, noisy, clean, lengths)
        systems = (("stage1", enhanced.stage1), ("stage1+2", enhanced.refined))
        for extra, (name, wav) in enumerate(systems):
            if wav is None:
                continue
            self.test_metrics[name].append(ids, wav, clean, lengths)
            self.test_timing.setdefault(name, {})[tuple(ids)] = (
                enhanced.nfe + extra,
                enhanced.seconds[name],
                audio_seconds,
            )

    def end_test(self, stage_loss):
        """Gather across ranks; log, write the summary and per-utterance CSVs.

        Sub-classes add columns to the summary rows in
        :meth:`add_test_columns`.
        """
        rows, utterances = summarise_systems(
            self.test_metrics, self.test_timing
        )
        self.test_utterances = utterances
        self.add_test_columns(rows)
        for row in rows:
            stats = {
                k: row[k] for k in RESULT_FIELDS[1:] if row.get(k) is not None
            }
            self.hparams.train_logger.log_stats(
                stats_meta={"test": row["system"]}, test_stats=stats
            )
        if if_main_process():
            write_csv_atomic(
                self.hparams.test_csv, rows, RESULT_FIELDS, float_digits=4
            )
            write_csv_atomic(
                self.hparams.test_utterance_csv,
                utterances,
                UTTERANCE_FIELDS,
                float_digits=4,
            )
            logger.info(f"Test results written to {self.hparams.test_csv}")

    def add_test_columns(self, rows):
        """Complete the test summary rows (in place); nothing by default."""

    # -- export --------------------------------------------------------------
    def exported_parts(self):
        """The arguments of :func:`~speechbrain_elbo.export.export_enhancer`
        that make the exported model: ``score_backbone``, ``sde``,
        ``transform``, ``sampler`` and ``refiner`` (sub-classes)."""
        raise NotImplementedError

    def export(self, folder, model_card=None):
        """Export the model as a ``from_hparams`` folder (main process).

        Arguments
        ---------
        folder : str or pathlib.Path
            The folder to write, replaced atomically.
        model_card : dict, optional
            What the model is, for its model card.
        """
        from speechbrain_elbo.export import export_enhancer

        if if_main_process():
            export_enhancer(
                folder,
                **self.exported_parts(),
                model_card=model_card,
                sample_rate=self.hparams.sample_rate,
            )
            logger.info(f"{self.exported_name} exported to {folder}")
        ddp_barrier()


def summarise_systems(metrics, timing):
    """Merge ranks; one summary row per system and per-utterance rows.

    Arguments
    ---------
    metrics : dict
        System -> :class:`~speechbrain_elbo.metrics.EnhancementMetrics`.
    timing : dict
        System -> {tuple of ids: (nfe, seconds, audio seconds)} of this
        rank.

    Returns
    -------
    rows : list of dict
        One per system: scores, ``nfe`` and ``rtf`` (processing time over
        audio duration).
    utterances : list of dict
        One per (utterance, system), with its share of the batch's time.

    Example
    -------
    >>> rows, utterances = summarise_systems(
    ...     {"stage1": EnhancementMetrics(16000)},
    ...     {"stage1": {("a", "b"): (4, 1.0, 2.0)}})
    >>> rows[0]["nfe"], rows[0]["rtf"], utterances
    (4, 0.5, [])
    """
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
