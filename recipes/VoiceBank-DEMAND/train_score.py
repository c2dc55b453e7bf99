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
the same output folder. The logic lives in ``speechbrain_elbo.training``.
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from speechbrain_elbo.dataio import make_datasets
from speechbrain_elbo.dataprep.voicebank import prepare_voicebank
from speechbrain_elbo.training import ScoreBrain, parse_arguments


def main(argv=None):
    """Run stage 1; returns the Brain (for tests)."""
    hparams_file, run_opts, overrides = parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    prep_kwargs = {
        "data_folder": hparams["data_folder"],
        "save_folder": hparams["prep_folder"],
        "valid_speakers": hparams["valid_speakers"],
        "sample_rate": hparams["sample_rate"],
        "skip_prep": hparams["skip_prep"],
    }
    run_on_main(prepare_voicebank, kwargs=prep_kwargs)
    manifests = prepare_voicebank(**{**prep_kwargs, "skip_prep": True})
    datasets = make_datasets(
        manifests,
        crop_frames=hparams["crop_frames"],
        hop_length=hparams["hop_length"],
        sample_rate=hparams["sample_rate"],
    )

    brain = ScoreBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        hparams["epoch_counter"],
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    brain.evaluate(
        datasets["test"], test_loader_kwargs=hparams["test_dataloader_opts"]
    )
    brain.export(
        hparams["export_folder"],
        model_card={
            "task": "speech denoising (VoiceBank-DEMAND)",
            "stage": "1 (score model)",
            "loss": hparams["loss"],
            "epoch": hparams["epoch_counter"].current,
            "test_results": hparams["test_csv"],
        },
    )
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
