#!/usr/bin/env bash
# The whole two-stage pipeline on WHAMR!, resumable.
#
#   ./run.sh DATA_FOLDER OUTPUT_FOLDER [--task dereverb|denoise_dereverb] \
#       [--config tiny|small|full] [--key=value ...]
#
# DATA_FOLDER holds wav16k/ (the official WHAMR! layout, or one made by
# python -m speechbrain_elbo.minidata.rooms). --task: dereverb (s1_reverb ->
# s1_anechoic, default) or denoise_dereverb (mix_single_reverb ->
# s1_anechoic); one OUTPUT_FOLDER per task.
#
# Steps: prepare (OUTPUT/prepared), stage1 (OUTPUT/score), cache
# (OUTPUT/refiner/stage1_cache), stage2 (OUTPUT/refiner); then OUTPUT/model
# (the two-stage enhancer), OUTPUT/results.csv (noisy / stage 1 / stage 1+2)
# and OUTPUT/results_bins.csv (the same per bin of measured RT60 and DRR,
# when the data has them). A second call skips the steps it finished with the
# same arguments. --config: tiny (smoke test), small (CPU demo) or full (the
# GPU setting of hparams/*.yaml, default); --key=value overrides go to the
# stages whose YAML has the key.
# Several GPUs: LAUNCHER="torchrun --nproc_per_node=4" ./run.sh ...
#
# The steps are run by tools/two_stage_driver.sh, shared by the recipes; its
# header documents them in full.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$HERE/../../tools/two_stage_driver.sh" "$HERE" "$0" \
    --choice task=dereverb,denoise_dereverb -- "$@"
