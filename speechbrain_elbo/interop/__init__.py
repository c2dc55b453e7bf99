"""Use models trained by other code bases (docs/interop.md).

- :mod:`speechbrain_elbo.interop.checkpoint`: weights-only reading of
  foreign checkpoints;
- :mod:`speechbrain_elbo.interop.sgmse`: sgmse (SGMSE+) checkpoints to
  exported folders that ``DiffusionEnhancement.from_hparams`` loads, and
  the command ``speechbrain-elbo-import``; it uses
- :mod:`speechbrain_elbo.interop.sgmse_hparams`: the checkpoint's
  ``hyper_parameters``, checked, to our SDE, transform and sampler;
- :mod:`speechbrain_elbo.interop.sgmse_network`: ``SGMSENCSNpp``, NCSN++
  with sgmse's score parameterisation and frame padding, and
  ``SGMSENCSNppV2`` for ``ncsnpp_v2`` (input/output scalings);
- :mod:`speechbrain_elbo.interop.sgmse_weights`: sgmse's backbone tensors
  (EMA or raw) mapped onto ``SGMSENCSNpp``;
- :mod:`speechbrain_elbo.interop.speechbrain_sgmse`: checkpoint folders of
  SpeechBrain's SGMSE recipe (``CKPT+...`` and the run's
  ``hyperparams.yaml``), imported with the same checks and writer.
"""
