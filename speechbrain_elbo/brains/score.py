"""Stage 1: the score model (docs/method.md, sections 2 to 5).

:class:`ScoreBrain` trains the score model with a loss chosen by name
(:func:`speechbrain_elbo.losses.build_score_loss`, docs/method.md,
section 4) on random crops, validates the EMA weights (loss on every crop,
PESQ/ESTOI/SI-SDR on a few sampled ones), tests them with the enhancement
pipeline of inference (:func:`speechbrain_elbo.pipeline.enhance_waveforms`:
NFE and real-time factor included) and exports them as a ``from_hparams``
folder.
"""

import pathlib

import speechbrain as sb
import torch

from speechbrain_elbo.brains.base import EnhancementBrain
from speechbrain_elbo.fileio import write_audio_atomic
from speechbrain_elbo.pipeline import enhance_spectrogram, enhance_waveforms
from speechbrain_elbo.spectral import frame_mask, peak_normalize

__all__ = ["ScoreBrain"]


class ScoreBrain(EnhancementBrain):
    """Stage 1: the score model (docs/method.md, sections 2 to 5).

    ``modules["score_model"]`` is a :class:`~speechbrain_elbo.score.ScoreModel`
    (backbone + SDE). Required hparams besides those of
    :class:`~speechbrain_elbo.brains.base.EnhancementBrain`: ``transform``,
    ``sde``, ``loss_fn`` (from
    :func:`~speechbrain_elbo.losses.build_score_loss`), ``sampler`` (test),
    ``valid_sampler``. For the test files: ``test_csv``,
    ``test_utterance_csv``, optional ``save_enhanced``/``enhanced_folder``.

    Example
    -------
    >>> from speechbrain_elbo.losses import build_score_loss
    >>> from speechbrain_elbo.sampling import Sampler
    >>> from speechbrain_elbo.score import ScoreModel
    >>> from speechbrain_elbo.sde import GeometricGNS, OUVESDE
    >>> from speechbrain_elbo.spectral import SpectralTransform
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
    exported_name = "Stage-1 model"
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

        :func:`~speechbrain_elbo.pipeline.enhance_spectrogram`: as at
        inference, y is zero-padded to the network's frame multiple for
        sampling and the estimate cropped back.
        """
        out = enhance_spectrogram(
            self.ema_net, self.hparams.sde, y, sampler, generator=generator
        )
        wav = self.hparams.transform.decode(out.stage1, length, lengths)
        return wav * scale, out.stage1, out.nfe

    def score_valid_batch(self, batch, predictions, count):
        """Sample the first ``count`` crops with ``valid_sampler``; score."""
        noisy, clean, lengths = self._waveforms(batch)
        keep = min(count, noisy.shape[0])
        wav, _, _ = self.enhance(
            predictions["y"][:keep],
            predictions["scale"][:keep],
            noisy.shape[-1],
            lengths[:keep],
            self.hparams.valid_sampler,
            self.eval_generator,
        )
        self._score_valid(batch.id[:keep], wav, clean[:keep], lengths[:keep])

    # -- test ----------------------------------------------------------------
    def _test_batch(self, batch):
        """Enhance whole utterances as the exported model does; score them."""
        noisy, clean, lengths = self._waveforms(batch)
        with self.evaluation_ctx:
            enhanced = enhance_waveforms(
                noisy,
                self.hparams.transform,
                self.ema_net,
                self.hparams.sde,
                self.hparams.sampler,
                lengths=lengths,
                generator=self.test_generator(batch),
            )
        self.record_test(batch, noisy, clean, lengths, enhanced)
        self._save_enhanced(batch.id, enhanced.stage1, lengths, "stage1")
        return torch.tensor(0.0)

    def _save_enhanced(self, ids, wav, lengths, system):
        if not getattr(self.hparams, "save_enhanced", False):
            return
        folder = pathlib.Path(self.hparams.enhanced_folder) / system
        valid = torch.round(lengths * wav.shape[-1]).long().tolist()
        for uid, signal, count in zip(
            ids, wav.float().cpu(), valid, strict=True
        ):
            write_audio_atomic(
                folder / f"{uid}.wav", signal[:count], self.hparams.sample_rate
            )

    def exported_parts(self):
        """The EMA score network with the test sampler."""
        return {
            "score_backbone": self.ema_net.backbone,
            "sde": self.hparams.sde,
            "transform": self.hparams.transform,
            "sampler": self.hparams.sampler,
        }
