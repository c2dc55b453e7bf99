#!/usr/bin/env python3
"""Stage 2 on VoiceBank-DEMAND: cache stage-1 estimates, train the refiner,
test noisy / stage 1 / stage 1+2 with the ELBO terms, export both stages.

One GPU::

    python train_refiner.py hparams/refiner.yaml --data_folder /path/VB \\
        --stage1_folder results/score/1234/model

Several GPUs (the cache generation is split across ranks too)::

    torchrun --nproc_per_node=4 train_refiner.py hparams/refiner.yaml \\
        --data_folder /path/VB --stage1_folder results/score/1234/model

The cache is resumable and reused by later runs; ``--regenerate_cache=True``
rebuilds it, ``--cache_only=True`` stops after it. The Brain is
:class:`speechbrain_elbo.brains.RefinerBrain`; the steps shared with the
other recipes are in :mod:`speechbrain_elbo.recipe`.
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain_elbo.brains import RefinerBrain
from speechbrain_elbo.recipe import (
    PREPARE_ONLY_FLAG,
    brain_arguments,
    cache_stage1_estimates,
    fit_loader_arguments,
    init_refiner,
    load_stage1,
    model_card,
    parse_arguments,
    refiner_datasets,
    take_flag,
    voicebank_manifests,
)

#: What the model does, for its model card.
TASK = "speech denoising (VoiceBank-DEMAND)"


def main(argv=None):
    """Run stage 2; returns the Brain (None with ``cache_only`` or
    ``--prepare_only``)."""
    # The YAML file with --overrides_file FILE and --key=value overrides;
    # --prepare_only: prepare the data with these options, then stop
    argv, prepare_only = take_flag(argv, PREPARE_ONLY_FLAG)
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    if not prepare_only:
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )

    # Data preparation on the main process (run_on_main)
    manifests = voicebank_manifests(hparams)
    if prepare_only:
        return None

    # The frozen stage 1 (its export, with its sampler) and its estimates of
    # the training and validation sets, generated once into cache_folder
    stage1 = load_stage1(hparams, run_opts)
    cache = cache_stage1_estimates(hparams, run_opts, stage1, manifests)
    if hparams["cache_only"]:
        return None
    datasets = refiner_datasets(hparams, manifests, stage1, cache)

    # Training on aligned crops of (stage-1 estimate, noisy, clean), from
    # the refiner of refiner_init_folder when it is set (warm start)
    init_refiner(hparams)
    brain = RefinerBrain(stage1=stage1, **brain_arguments(hparams, run_opts))
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        **fit_loader_arguments(hparams),
    )

    # Test of the best checkpoint: noisy / stage 1 / stage 1+2 with the ELBO
    # terms (decoder variances fitted on the validation crops), then the
    # export of both stages as one from_hparams folder
    brain.evaluate(
        datasets["test"],
        decoder_fit_set=datasets["valid"],
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )
    brain.export(hparams["export_folder"], model_card(TASK, hparams, stage1))
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
