#!/usr/bin/env bash
# The whole two-stage pipeline on VoiceBank-DEMAND, resumable.
#
#   ./run.sh DATA_FOLDER OUTPUT_FOLDER [--config tiny|small|full] [--key=value ...]
#
# Steps: prepare (OUTPUT/prepared), stage1 (OUTPUT/score), cache
# (OUTPUT/refiner/stage1_cache), stage2 (OUTPUT/refiner); then OUTPUT/model
# (the two-stage enhancer) and OUTPUT/results.csv (noisy / stage 1 /
# stage 1+2). A second call skips the steps it finished with the same
# arguments. --config: tiny (smoke test, a few minutes on 2 CPU cores for ~50
# pairs), small (CPU demo) or full (the GPU setting of hparams/*.yaml,
# default); --key=value overrides go to the stages whose YAML has the key.
# Several GPUs: LAUNCHER="torchrun --nproc_per_node=4" ./run.sh ...
#
# The steps are run by tools/two_stage_driver.sh, shared by the recipes; its
# header documents them in full.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$HERE/../../tools/two_stage_driver.sh" "$HERE" "$0" -- "$@"
