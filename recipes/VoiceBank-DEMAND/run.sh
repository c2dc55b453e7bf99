#!/usr/bin/env bash
# The whole two-stage pipeline on VoiceBank-DEMAND, resumable.
#
#   ./run.sh DATA_FOLDER OUTPUT_FOLDER [--config tiny|small|full] [--key=value ...]
#
# Steps, in order (each is skipped when a previous call finished it with the
# same arguments, so a second call resumes; a step interrupted half-way
# resumes from its own checkpoints):
#   1. prepare     16 kHz copies and manifests      OUTPUT/prepared
#   2. stage1      train, test, export the score model  OUTPUT/score
#   3. cache       stage-1 estimates of train/valid     OUTPUT/refiner/stage1_cache
#   4. stage2      train the refiner, test noisy / stage 1 / stage 1+2 with
#                  the ELBO terms, export both stages   OUTPUT/refiner
#   then          OUTPUT/model (from_hparams folder of the two-stage
#                  enhancer) and OUTPUT/results.csv
#
# --config picks the network, batch size and epochs: tiny (smoke test, a few
# minutes on 2 CPU cores for ~50 pairs), small (CPU demo) or full (the GPU
# setting of hparams/*.yaml, default). Extra --key=value overrides go to each
# stage whose YAML file has the key; SpeechBrain run options (--device,
# --precision, ...) go to both; an unknown key is an error.
#
# Several GPUs: LAUNCHER="torchrun --nproc_per_node=4" ./run.sh ...
set -euo pipefail

usage() {
    echo "usage: $0 DATA_FOLDER OUTPUT_FOLDER [--config tiny|small|full] [--key=value ...]" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
DATA=$(realpath -m "$1")
OUT=$(realpath -m "$2")
shift 2
CONFIG=full
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) [[ $# -ge 2 ]] || usage; CONFIG=$2; shift 2 ;;
        --config=*) CONFIG=${1#--config=}; shift ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done
case "$CONFIG" in
    tiny|small|full) ;;
    *) echo "error: --config must be tiny, small or full, not '$CONFIG'" >&2; exit 2 ;;
esac
[[ -d "$DATA" ]] || { echo "error: data folder $DATA does not exist" >&2; exit 2; }
# The tiny networks are faster on one thread, and much faster than with
# PyTorch's default (all cores) on a machine shared with other jobs.
if [[ $CONFIG == tiny ]]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}
LAUNCHER=${LAUNCHER:-$PYTHON}
SCORE_YAML=$HERE/hparams/score.yaml
REFINER_YAML=$HERE/hparams/refiner.yaml
MARKS=$OUT/.run_sh
mkdir -p "$MARKS"

# Arguments of each stage: the preset, then the user's overrides.
SCORE_ARGS=()
REFINER_ARGS=()
if [[ $CONFIG != full ]]; then
    SCORE_ARGS+=(--overrides_file "$HERE/hparams/overrides/${CONFIG}_score.yaml")
    REFINER_ARGS+=(--overrides_file "$HERE/hparams/overrides/${CONFIG}_refiner.yaml")
fi
split_args() {  # split_args OUT_ARRAY YAML OTHER_YAML
    local -n target=$1
    local selected
    selected=$("$PYTHON" -m speechbrain_elbo.training stage-args "$2" "$3" \
        -- "${EXTRA[@]}" | tr '\0' '\n') || exit 2
    if [[ -n $selected ]]; then
        mapfile -t -O "${#target[@]}" target <<< "$selected"
    fi
}
split_args SCORE_ARGS "$SCORE_YAML" "$REFINER_YAML"
split_args REFINER_ARGS "$REFINER_YAML" "$SCORE_YAML"

START=$(date +%s)
STEPS=(prepare stage1 cache stage2)
step() {  # step NAME COMMAND...: run unless done with the same command
    local name=$1
    shift
    local mark="$MARKS/$name.done"
    local signature
    signature=$(printf '%q ' "$@")
    if [[ -f $mark && $(cat "$mark") == "$signature" ]]; then
        echo "[run.sh] $name: already done, skipped"
        return
    fi
    # A step that runs again invalidates the steps after it.
    local later=0 other
    for other in "${STEPS[@]}"; do
        [[ $later == 1 ]] && rm -f "$MARKS/$other.done"
        [[ $other == "$name" ]] && later=1
    done
    echo "[run.sh] $name: $signature"
    local t0
    t0=$(date +%s)
    "$@"
    echo "$signature" > "$mark"
    echo "[run.sh] $name: done in $(( $(date +%s) - t0 )) s"
}

cd "$HERE"
COMMON=(--data_folder="$DATA" --prep_folder="$OUT/prepared")

step prepare "$PYTHON" -c \
    'import sys; from speechbrain_elbo.dataprep.voicebank import prepare_voicebank; prepare_voicebank(sys.argv[1], sys.argv[2])' \
    "$DATA" "$OUT/prepared"

step stage1 $LAUNCHER train_score.py "$SCORE_YAML" "${COMMON[@]}" \
    --output_folder="$OUT/score" "${SCORE_ARGS[@]}"

STAGE2=(train_refiner.py "$REFINER_YAML" "${COMMON[@]}"
    --output_folder="$OUT/refiner" --stage1_folder="$OUT/score/model"
    "${REFINER_ARGS[@]}")
step cache $LAUNCHER "${STAGE2[@]}" --cache_only=True
step stage2 $LAUNCHER "${STAGE2[@]}"

# Collect the deliverables (cheap, always redone).
rm -rf "$OUT/.model.tmp"
cp -r "$OUT/refiner/model" "$OUT/.model.tmp"
rm -rf "$OUT/model"
mv "$OUT/.model.tmp" "$OUT/model"
cp "$OUT/refiner/test_results.csv" "$OUT/.results.csv.tmp"
mv "$OUT/.results.csv.tmp" "$OUT/results.csv"

echo "[run.sh] finished in $(( $(date +%s) - START )) s"
echo "[run.sh] two-stage model: $OUT/model"
echo "[run.sh] results (noisy / stage 1 / stage 1+2): $OUT/results.csv"
cat "$OUT/results.csv"
