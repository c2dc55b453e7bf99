#!/usr/bin/env python3
"""Stage 1 on VoiceBank-DEMAND: train, test and export the score model.

One GPU::

    python train_score.py hparams/score.yaml --data_folder /path/to/VB-DEMAND

Several GPUs (DDP)::

    torchrun --nproc_per_node=4 train_score.py hparams/score.yaml \\
        --data_folder /path/to/VB-DEMAND

CPU smoke run::

    python train_score.py hparams/score.yaml --data_folder DATA \\
        --overrides_file hparams/overrides/tiny_score.yaml --device=cpu

An interrupted run resumes from its last checkpoint when started again with
the same output folder; ``--prepare_only`` only prepares the data. The Brain
is :class:`speechbrain_elbo.brains.ScoreBrain`; the steps shared with the
other recipes are in :mod:`speechbrain_elbo.recipe`.
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from speechbrain_elbo.brains import ScoreBrain
from speechbrain_elbo.recipe import (
    PREPARE_ONLY_FLAG,
    brain_arguments,
    fit_loader_arguments,
    init_score,
    model_card,
    parse_arguments,
    score_datasets,
    take_flag,
    voicebank_manifests,
)

#: What the model does, for its model card.
TASK = "speech denoising (VoiceBank-DEMAND)"


def main(argv=None):
    """Run stage 1; returns the Brain (None with ``--prepare_only``)."""
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

    # Data preparation on the main process (run_on_main), then the
    # datasets: random training crops, centred validation crops, whole
    # test utterances
    manifests = voicebank_manifests(hparams)
    if prepare_only:
        return None
    datasets = score_datasets(hparams, manifests)

    # Training, from the score network of score_init_folder when it is set
    # (warm start); started again, it resumes from the last checkpoint
    init_score(hparams)
    brain = ScoreBrain(**brain_arguments(hparams, run_opts))
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        **fit_loader_arguments(hparams),
    )

    # Test of the best checkpoint (noisy and stage 1), then the export of
    # its EMA weights as a from_hparams folder
    brain.evaluate(
        datasets["test"], test_loader_kwargs=hparams["test_dataloader_opts"]
    )
    brain.export(hparams["export_folder"], model_card(TASK, hparams))
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
