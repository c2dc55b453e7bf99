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
the same output folder; ``--prepare_only`` only prepares the data. The logic
lives in ``speechbrain_elbo.recipe`` and ``speechbrain_elbo.training``.
"""

import sys

from speechbrain_elbo.recipe import run_score_stage, voicebank_manifests


def main(argv=None):
    """Run stage 1; returns the Brain (for tests)."""
    return run_score_stage(
        argv, voicebank_manifests, "speech denoising (VoiceBank-DEMAND)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
