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
rebuilds it. The logic lives in ``speechbrain_elbo.recipe``,
``speechbrain_elbo.training`` and ``speechbrain_elbo.cache``.
"""

import sys

from speechbrain_elbo.recipe import run_refiner_stage, voicebank_manifests


def main(argv=None):
    """Run stage 2; returns the Brain (None with ``cache_only``)."""
    return run_refiner_stage(
        argv, voicebank_manifests, "speech denoising (VoiceBank-DEMAND)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
