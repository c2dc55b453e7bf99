"""Stage 2: the refinement model on cached stage-1 estimates.

:class:`RefinerBrain` trains the refiner with the data-domain loss of
docs/method.md, section 7 (:class:`speechbrain_elbo.losses.RefinementLoss`)
on crops of the cached stage-1 estimates (:mod:`speechbrain_elbo.cache`),
and tests the two stages with the pipeline of inference
(:func:`speechbrain_elbo.pipeline.enhance_waveforms`): the noisy input,
stage 1 and stage 1+2 from the same stage-1 sample side by side, with the
ELBO terms (docs/method.md, section 4) of stage 1 alone and with the refiner
as decoder. Its export holds both stages.
"""

import itertools
import math

import speechbrain as sb
import torch
from speechbrain.utils.distributed import (
    if_main_process,
    is_distributed_initialized,
)
from speechbrain.utils.logger import get_logger

from speechbrain_elbo.brains.base import EnhancementBrain
from speechbrain_elbo.elbo import (
    decoder_input,
    fit_decoder_variances,
    negative_elbo,
)
from speechbrain_elbo.fileio import write_csv_atomic
from speechbrain_elbo.losses import RefinementLoss
from speechbrain_elbo.metrics import EnhancementMetrics, gather_objects
from speechbrain_elbo.pipeline import (
    enhance_waveforms,
    frame_multiple_of,
    unwrap_module,
    utterance_seed,
)
from speechbrain_elbo.spectral import frame_mask, peak_normalize

logger = get_logger(__name__)

__all__ = ["RefinerBrain", "ELBO_FIELDS"]

#: Columns of the per-utterance ELBO CSV.
ELBO_FIELDS = [
    "id",
    "system",
    "neg_elbo",
    "prior",
    "diffusion",
    "reconstruction",
    "stderr",
]

#: The terms of the negative ELBO kept per utterance.
ELBO_TERMS = ("prior", "diffusion", "reconstruction", "stderr")


def _sampler_outputs(kinds):
    """The examples that are sampler outputs (kind 0), or None (all)."""
    return None if kinds is None else kinds == 0


class RefinerBrain(EnhancementBrain):
    """Stage 2: the refinement model on cached stage-1 estimates.

    ``modules["refiner"]`` is the trained refiner; ``stage1`` is the frozen
    stage-1 model (:func:`speechbrain_elbo.export.load_enhancer`). Training
    batches come from :func:`speechbrain_elbo.cache.make_refiner_datasets`
    (``xhat_spec``, ``noisy_spec``, ``clean_spec``, ``frame_mask``); test
    batches are whole waveforms (``noisy_sig``, ``clean_sig``). Required
    hparams besides those of
    :class:`~speechbrain_elbo.brains.base.EnhancementBrain`:
    ``spec_weight``, ``mag_weight`` and ``time_weight`` (of the
    :class:`~speechbrain_elbo.losses.RefinementLoss`), ``test_csv``,
    ``test_utterance_csv``, ``elbo_csv``, ``elbo_diffusion_samples``,
    ``elbo_reconstruction_samples``, ``elbo_utterances``,
    ``decoder_fit_batches``, ``forward_share`` (the share of training
    inputs that are decoder inputs of the ELBO rather than cached sampler
    outputs, docs/method.md §7), ``relative_loss`` (judge each kind of
    input by the share of its error the refiner removes) and
    ``level_crops`` (training crops on which the input levels of a
    conditional refiner are measured).

    Arguments
    ---------
    stage1 : types.SimpleNamespace
        The frozen stage 1, as returned by
        :func:`speechbrain_elbo.export.load_enhancer`.
    *args, **kwargs
        Passed to ``speechbrain.Brain``.

    Example
    -------
    >>> RefinerBrain({"refiner": torch.nn.Linear(1, 1)}, hparams={})
    Traceback (most recent call last):
    ...
    ValueError: RefinerBrain needs the frozen stage-1 model: ...
    """

    net_key = "refiner"
    exported_name = "Two-stage model"
    test_systems = ("noisy", "stage1", "stage1+2")
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
        "forward_share",
        "relative_loss",
        "level_crops",
    )

    def __init__(self, *args, stage1=None, **kwargs):
        if stage1 is None:
            raise ValueError(
                "RefinerBrain needs the frozen stage-1 model: pass "
                "stage1=speechbrain_elbo.export.load_enhancer(stage1_folder)."
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
            relative=self.hparams.relative_loss,
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
        """Refine the stage-1 estimates (EMA refiner outside training).

        In training, each crop's input is, with probability
        ``forward_share``, the decoder input of the ELBO instead of the
        cached sampler output: the Tweedie estimate of a forward-process
        state at t_eps (:func:`speechbrain_elbo.elbo.decoder_input`), so
        that the refiner learns both of its jobs (docs/method.md §7); a
        conditional refiner is told each input's level. In validation, the
        refiner is also applied as the decoder to such inputs and the error
        it leaves is compared with the Tweedie estimate's
        (``decoder_gain_db`` in the log).
        """
        x_hat, y, x0, mask = self._spectrograms(batch)
        net = self.net if stage == sb.Stage.TRAIN else self.ema_net
        kinds = None
        if stage == sb.Stage.TRAIN:
            x_hat, kinds = self._mix_decoder_inputs(x_hat, y, x0, mask)
            refined = net(x_hat, y, *self._levels(kinds))
        else:
            if stage == sb.Stage.VALID:
                self._record_decoder_error(y, x0, mask)
            refined = net(x_hat, y)
        return {
            "refined": refined,
            "x_hat": x_hat,
            "y": y,
            "x0": x0,
            "mask": mask,
            "kinds": kinds,
        }

    def fit(self, epoch_counter, train_set, valid_set=None, **kwargs):
        """``speechbrain.Brain.fit``; a conditional refiner first gets its
        input levels, measured on the first ``level_crops`` training crops
        (:meth:`measure_input_levels`)."""
        refiner = unwrap_module(self.net)
        if getattr(refiner, "conditional", False):
            levels = self.measure_input_levels(train_set)
            for net in (refiner, self.ema_net):
                net.set_levels(**levels)
            logger.info(f"Refiner input levels (RMS error per bin): {levels}")
        return super().fit(epoch_counter, train_set, valid_set, **kwargs)

    @torch.no_grad()
    def measure_input_levels(self, dataset):
        """RMS error per complex bin of each kind of refiner input.

        ``sample``: the cached sampler outputs; ``decoder``: the ELBO
        decoder's input (the Tweedie estimate at t_eps of a forward draw,
        seeded with ``seed``), over the first ``level_crops`` crops of
        ``dataset`` (a Dataset or a DataLoader) with their frame masks.
        """
        if not isinstance(dataset, torch.utils.data.DataLoader):
            dataset = sb.dataio.dataloader.make_dataloader(
                dataset, batch_size=1
            )
        generator = torch.Generator(device=self.device).manual_seed(
            int(self.hparams.seed)
        )
        sums = {"sample": 0.0, "decoder": 0.0}
        bins = 0.0
        for batch in itertools.islice(dataset, int(self.hparams.level_crops)):
            x_hat, y, x0, mask = self._spectrograms(batch)
            x0_hat = self._decoder_inputs(y, x0, mask, generator)
            for name, estimate in (("sample", x_hat), ("decoder", x0_hat)):
                error = ((estimate - x0) * mask).abs().pow(2).sum()
                sums[name] += error.item()
            bins += mask.sum().item() * x0.shape[1] * x0.shape[2]
        if bins == 0:
            raise ValueError(
                "measure_input_levels: the training set has no crops."
            )
        return {name: math.sqrt(value / bins) for name, value in sums.items()}

    def _levels(self, kinds):
        """The level argument of a conditional refiner (else nothing)."""
        refiner = unwrap_module(self.net)
        if not getattr(refiner, "conditional", False):
            return ()
        levels = torch.where(
            kinds.bool(), refiner.decoder_level, refiner.sample_level
        )
        return (levels,)

    def _decoder_inputs(self, y, x0, mask, generator=None):
        stage1 = self.stage1
        x0_hat = decoder_input(stage1.score_model, stage1.sde, x0, y, generator)
        return x0_hat.to(torch.complex64) * mask

    def _mix_decoder_inputs(self, x_hat, y, x0, mask):
        """Replace a ``forward_share`` of the inputs by decoder inputs;
        returns the inputs and their kinds (1: decoder input)."""
        share = float(self.hparams.forward_share)
        chosen = torch.rand(x_hat.shape[0], device=x_hat.device) < share
        kinds = chosen.long()
        if not bool(chosen.any()):
            return x_hat, kinds
        mixed = x_hat.clone()
        mixed[chosen] = self._decoder_inputs(
            y[chosen], x0[chosen], mask[chosen]
        ).to(x_hat.dtype)
        return mixed, kinds

    def _record_decoder_error(self, y, x0, mask):
        """Squared errors of the Tweedie estimate and of its refinement."""
        x0_hat = self._decoder_inputs(y, x0, mask, self.eval_generator)
        refined = self._decoder(x0_hat, y) * mask
        for name, estimate in (("tweedie", x0_hat), ("refined", refined)):
            error = (estimate - x0).abs().pow(2).sum().item()
            self.decoder_errors[name] += error

    def compute_objectives(self, predictions, batch, stage):
        """The data-domain loss of docs/method.md, section 7."""
        refined = predictions["refined"].to(torch.complex64)
        return self.refine_loss(
            refined,
            predictions["x0"],
            predictions["mask"],
            reference=predictions["x_hat"],
            groups=predictions["kinds"],
            time_examples=_sampler_outputs(predictions["kinds"]),
        )

    def score_valid_batch(self, batch, predictions, count):
        """Score the first ``count`` refined crops, and their cached stage-1
        estimates for comparison."""
        keep = min(count, predictions["x0"].shape[0])
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

    def on_stage_start(self, stage, epoch=None):
        """Also track the stage-1 metrics of the validation crops."""
        super().on_stage_start(stage, epoch)
        self.stage1_valid_metrics = EnhancementMetrics(self.hparams.sample_rate)
        self.decoder_errors = {"tweedie": 0.0, "refined": 0.0}
        if stage == sb.Stage.TEST:
            self.elbo_records = {"stage1": [], "stage1+2": []}

    def valid_stats(self, stage_loss):
        """Refined metrics, plus those of the cached stage-1 estimates."""
        stats = super().valid_stats(stage_loss)
        errors = {"tweedie": 0.0, "refined": 0.0}
        for part in gather_objects(self.decoder_errors):
            for name in errors:
                errors[name] += part[name]
        if errors["refined"] > 0:
            ratio = errors["tweedie"] / errors["refined"]
            stats["decoder_gain_db"] = 10 * math.log10(ratio)
        if len(self.stage1_valid_metrics):
            for name, value in self.stage1_valid_metrics.summarize().items():
                if name != "count":
                    stats[f"stage1_{name}"] = value
        return stats

    # -- decoder variance and test -------------------------------------------
    def evaluate(self, test_set, decoder_fit_set=None, **kwargs):
        """Test the two stages; fit the ELBO decoder variances first.

        Arguments
        ---------
        test_set : Dataset or DataLoader
            Whole test utterances (``noisy_sig``, ``clean_sig``).
        decoder_fit_set : Dataset, optional
            Held-out data (the validation set of
            :func:`~speechbrain_elbo.cache.make_refiner_datasets`) on which
            the Gaussian decoder variances of stage 1 and stage 1+2 are
            fitted by maximum likelihood (docs/method.md, section 4).
            Without it the stage-1 default sigma_{t_eps}^2 / a_{t_eps}^2 is
            used for both.
        **kwargs
            ``max_key``, ``min_key``, ``progressbar``,
            ``test_loader_kwargs``: as in
            :meth:`~speechbrain_elbo.brains.base.EnhancementBrain.evaluate`.
        """
        self._decoder_fit_set = decoder_fit_set
        return super().evaluate(test_set, **kwargs)

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Load the best checkpoint, then fit the decoder variances."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.decoder_variances = self.fit_decoder_variances(
            getattr(self, "_decoder_fit_set", None)
        )

    @torch.no_grad()
    def fit_decoder_variances(self, dataset):
        """Maximum-likelihood decoder variances on held-out crops
        (:func:`speechbrain_elbo.elbo.fit_decoder_variances`, as the demo
        report fits them).

        Returns
        -------
        dict
            ``{"stage1": v1, "stage1+2": v2, "source": str}``; v is the mean
            |x0 - m|^2 per complex bin with m the Tweedie estimate at t_eps
            (stage 1) or the refiner applied to it as the decoder (stage
            1+2).
        """
        sde = self.stage1.sde
        t_eps = torch.tensor(sde.t_eps)
        default = (sde.variance(t_eps) / sde.decay(t_eps) ** 2).item()
        fitted = {"crops": 0}
        if dataset is not None:
            loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=1)
            limit = int(self.hparams.decoder_fit_batches)
            crops = (
                self._spectrograms(batch)[1:]
                for batch in itertools.islice(loader, limit)
            )
            fitted = fit_decoder_variances(
                self.stage1.score_model,
                sde,
                ((x0, y, mask) for y, x0, mask in crops),
                {"stage1": None, "stage1+2": self._decoder},
                seed=int(self.hparams.seed),
            )
        if not fitted.pop("crops"):
            return {"stage1": default, "stage1+2": default, "source": "default"}
        fitted["source"] = (
            f"fitted on {min(limit, len(dataset))} validation crops"
        )
        logger.info(f"Decoder variances: {fitted}")
        return fitted

    def _decoder(self, x0_hat, y):
        """The EMA refiner as the decoder of the ELBO."""
        return self.ema_net.decode(x0_hat, y).to(torch.complex64)

    def _test_batch(self, batch):
        """Stage 1 and stage 1+2 of one sample, as the exported model does."""
        noisy, clean, lengths = self._waveforms(batch)
        stage1 = self.stage1
        with self.evaluation_ctx:
            enhanced = enhance_waveforms(
                noisy,
                self.transform,
                stage1.score_model,
                stage1.sde,
                stage1.sampler,
                refiner=self.ema_net,
                lengths=lengths,
                generator=self.test_generator(batch),
                frame_multiple=frame_multiple_of(stage1.backbone, self.ema_net),
            )
        self.record_test(batch, noisy, clean, lengths, enhanced)
        self._elbo_batch(batch, noisy, clean, lengths)
        return torch.tensor(0.0)

    def _elbo_batch(self, batch, noisy, clean, lengths):
        limit = self.hparams.elbo_utterances
        done = len(self.elbo_records["stage1"])
        if limit is not None:
            # the test utterances are split across ranks; so is the budget
            world = 1
            if is_distributed_initialized():
                world = torch.distributed.get_world_size()
            if done >= math.ceil(int(limit) / world):
                return
        noisy_n, clean_n, _ = peak_normalize(noisy, clean, lengths)
        y = self.transform.encode(noisy_n, lengths)
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
                record = {"id": uid}
                for term in ELBO_TERMS:
                    record[term] = getattr(terms, term)[index].item()
                self.elbo_records[name].append(record)

    def add_test_columns(self, rows):
        """Add the mean ELBO terms of stage 1 and stage 1+2; write the
        per-utterance ELBO terms to ``elbo_csv``."""
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
                total = (
                    record["prior"]
                    + record["diffusion"]
                    + record["reconstruction"]
                )
                elbo_rows.append({"system": name, "neg_elbo": total, **record})
        if if_main_process():
            logger.info(
                "ELBO terms in bits per real dimension; decoder variance "
                f"{self.decoder_variances['source']}."
            )
            write_csv_atomic(
                self.hparams.elbo_csv, elbo_rows, ELBO_FIELDS, float_digits=4
            )

    def exported_parts(self):
        """Stage 1 as loaded, with the EMA refiner."""
        return {
            "score_backbone": self.stage1.backbone,
            "sde": self.stage1.sde,
            "transform": self.stage1.transform,
            "sampler": self.stage1.sampler,
            "refiner": self.ema_net,
        }
