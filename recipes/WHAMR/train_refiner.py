#!/usr/bin/env python3
"""Stage 2 on WHAMR!: cache stage-1 estimates, train the refiner, test
noisy / stage 1 / stage 1+2 with the ELBO terms and per RT60/DRR bin, export
both stages.

One GPU::

    python train_refiner.py hparams/refiner.yaml --data_folder /path/WHAMR \\
        --task dereverb --stage1_folder results/dereverb/score/1234/model

Several GPUs (the cache generation is split across ranks too)::

    torchrun --nproc_per_node=4 train_refiner.py hparams/refiner.yaml \\
        --data_folder /path/WHAMR --task dereverb \\
        --stage1_folder results/dereverb/score/1234/model

The cache is resumable and reused by later runs; ``--regenerate_cache=True``
rebuilds it. The logic lives in ``speechbrain_elbo.recipe``,
``speechbrain_elbo.training`` and ``speechbrain_elbo.cache``.
"""

import sys

from speechbrain_elbo.recipe import run_refiner_stage, whamr_manifests


def main(argv=None):
    """Run stage 2; returns the Brain (None with ``cache_only``)."""
    return run_refiner_stage(
        argv, whamr_manifests, "WHAMR! {task} ({whamr_version} version)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
