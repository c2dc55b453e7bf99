#!/usr/bin/env bash
# The two-stage pipeline of a recipe, resumable: what recipes/*/run.sh run.
#
#   two_stage_driver.sh RECIPE_DIR RUN_NAME [--choice NAME=DEFAULT,OTHER...] \
#       -- DATA_FOLDER OUTPUT_FOLDER [--NAME VALUE] [--config tiny|small|full] \
#          [--key=value ...]
#
# RECIPE_DIR holds train_score.py, train_refiner.py, hparams/score.yaml,
# hparams/refiner.yaml and hparams/overrides/<config>_<stage>.yaml; RUN_NAME
# is what the usage message calls the script. Each --choice declares an
# option of the recipe (e.g. --choice task=dereverb,denoise_dereverb): the
# user may give --NAME VALUE among the listed values (default: the first),
# and it reaches both stages as --NAME=VALUE (both YAML files must have the
# key). An OUTPUT_FOLDER keeps the choices it was made with: another value
# is an error, since the stages would resume from the other run's
# checkpoints.
#
# Steps, in order (each is skipped when a previous call finished it with the
# same command, so a second call resumes; a step interrupted half-way
# resumes from its own checkpoints or files; a step that runs again makes
# the steps after it run again):
#   1. prepare     the data, with stage 1's options       OUTPUT/prepared
#                  (train_score.py --prepare_only)
#   2. stage1      train, test, export the score model    OUTPUT/score
#   3. cache       stage-1 estimates of train/valid       OUTPUT/refiner/stage1_cache
#                  (train_refiner.py --cache_only=True)
#   4. stage2      train the refiner, test noisy / stage 1 / stage 1+2 with
#                  the ELBO terms, export both stages     OUTPUT/refiner
#   then           OUTPUT/model (from_hparams folder of the two-stage
#                  enhancer), OUTPUT/results.csv and, when the test wrote
#                  per-bin means (test_bins in the YAML), OUTPUT/results_bins.csv
#
# --stage1 FOLDER skips step 2: stage 1 is the from_hparams folder FOLDER
# (e.g. an sgmse checkpoint imported with speechbrain-elbo-import, or the
# model of an earlier run), from which the cache is built and on which the
# refiner is trained.
#
# --config picks the network, batch size and epochs: tiny (smoke test), small
# (CPU demo) or full (the GPU setting of hparams/*.yaml, default). Extra
# --key=value overrides go to each stage whose YAML file has the key;
# SpeechBrain run options (--device, --precision, ...) go to both; an
# unknown key is an error before anything runs (tools/stage_args.py routes
# them).
#
# Environment: PYTHON (default python) runs the steps; LAUNCHER (default
# $PYTHON) the training steps, e.g. LAUNCHER="torchrun --nproc_per_node=4";
# with --config tiny, OMP_NUM_THREADS defaults to 1.
set -euo pipefail

driver_usage() {
    echo "usage: $0 RECIPE_DIR RUN_NAME [--choice NAME=VALUE,...] -- DATA OUT [ARGS...]" >&2
    exit 2
}

[[ $# -ge 3 ]] || driver_usage
TOOLS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -d $1 ]] || { echo "error: recipe folder $1 does not exist" >&2; exit 2; }
HERE=$(cd "$1" && pwd)
RUN_NAME=$2
shift 2
CHOICE_NAMES=()
declare -A CHOICES=() CHOSEN=()
while [[ $# -gt 0 && $1 != -- ]]; do
    case "$1" in
        --choice)
            [[ $# -ge 2 && $2 == ?*=?* ]] || driver_usage
            name=${2%%=*}
            CHOICE_NAMES+=("$name")
            CHOICES[$name]=${2#*=}
            CHOSEN[$name]=${CHOICES[$name]%%,*}
            shift 2
            ;;
        *) driver_usage ;;
    esac
done
[[ $# -gt 0 ]] || driver_usage
shift  # the --

usage() {
    local options="" name
    for name in "${CHOICE_NAMES[@]}"; do
        options+=" [--$name ${CHOICES[$name]//,/|}]"
    done
    echo "usage: $RUN_NAME DATA_FOLDER OUTPUT_FOLDER$options [--config tiny|small|full] [--stage1 FOLDER] [--key=value ...]" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
DATA=$(realpath -m "$1")
OUT=$(realpath -m "$2")
shift 2
CONFIG=full
STAGE1_FOLDER=""
EXTRA=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) [[ $# -ge 2 ]] || usage; CONFIG=$2; shift 2; continue ;;
        --config=*) CONFIG=${1#--config=}; shift; continue ;;
        --stage1) [[ $# -ge 2 ]] || usage; STAGE1_FOLDER=$2; shift 2; continue ;;
        --stage1=*) STAGE1_FOLDER=${1#--stage1=}; shift; continue ;;
    esac
    matched=0
    for name in "${CHOICE_NAMES[@]}"; do
        if [[ $1 == "--$name" ]]; then
            [[ $# -ge 2 ]] || usage
            CHOSEN[$name]=$2
            shift 2
            matched=1
            break
        elif [[ $1 == "--$name="* ]]; then
            CHOSEN[$name]=${1#--"$name"=}
            shift
            matched=1
            break
        fi
    done
    if [[ $matched == 0 ]]; then
        EXTRA+=("$1")
        shift
    fi
done
case "$CONFIG" in
    tiny|small|full) ;;
    *) echo "error: --config must be tiny, small or full, not '$CONFIG'" >&2; exit 2 ;;
esac
CHOICE_ARGS=()
for name in "${CHOICE_NAMES[@]}"; do
    value=${CHOSEN[$name]}
    if [[ ,${CHOICES[$name]}, != *",$value,"* ]]; then
        echo "error: --$name must be one of ${CHOICES[$name]//,/, }, not '$value'" >&2
        exit 2
    fi
    CHOICE_ARGS+=("--$name=$value")
done
[[ -d "$DATA" ]] || { echo "error: data folder $DATA does not exist" >&2; exit 2; }
if [[ -n $STAGE1_FOLDER ]]; then
    STAGE1_FOLDER=$(realpath -m "$STAGE1_FOLDER")
    [[ -f $STAGE1_FOLDER/hyperparams.yaml ]] || {
        echo "error: --stage1 $STAGE1_FOLDER is not a from_hparams folder (no hyperparams.yaml); import an sgmse checkpoint with speechbrain-elbo-import CKPT --out DIR" >&2
        exit 2
    }
fi
PYTHON=${PYTHON:-python}

# The CPU presets run on the free cores (speechbrain_elbo.runtime's rule,
# the one of inference and of make demo): threads beyond them make PyTorch
# many times slower on a machine shared with other jobs (docs/inference.md,
# "Backends, threads and load"). OMP_NUM_THREADS, when set, wins.
if [[ $CONFIG == tiny || $CONFIG == small ]] && [[ -z ${OMP_NUM_THREADS:-} ]]; then
    OMP_NUM_THREADS=$("$PYTHON" -c \
        'from speechbrain_elbo.runtime import default_threads as d; print(d())')
    export OMP_NUM_THREADS
    echo "CPU preset $CONFIG: $OMP_NUM_THREADS thread(s), the free cores now (set OMP_NUM_THREADS to choose)"
fi
LAUNCHER=${LAUNCHER:-$PYTHON}
SCORE_YAML=$HERE/hparams/score.yaml
REFINER_YAML=$HERE/hparams/refiner.yaml
MARKS=$OUT/.run_sh

# An output folder keeps the recipe choices it was made with.
if [[ ${#CHOICE_ARGS[@]} -gt 0 && -f $MARKS/choices ]]; then
    previous=$(cat "$MARKS/choices")
    if [[ $previous != "${CHOICE_ARGS[*]}" ]]; then
        echo "error: $OUT holds a run made with '$previous', not '${CHOICE_ARGS[*]}';" \
            "its checkpoints would be resumed. Use another OUTPUT_FOLDER." >&2
        exit 2
    fi
fi
mkdir -p "$MARKS"

# Arguments of each stage: the preset, the recipe choices, then the user's
# overrides.
SCORE_ARGS=()
REFINER_ARGS=()
if [[ $CONFIG != full ]]; then
    SCORE_ARGS+=(--overrides_file "$HERE/hparams/overrides/${CONFIG}_score.yaml")
    REFINER_ARGS+=(--overrides_file "$HERE/hparams/overrides/${CONFIG}_refiner.yaml")
fi
EXTRA=(${CHOICE_ARGS[@]+"${CHOICE_ARGS[@]}"} ${EXTRA[@]+"${EXTRA[@]}"})
split_args() {  # split_args OUT_ARRAY YAML OTHER_YAML
    local -n target=$1
    local selected
    selected=$("$PYTHON" "$TOOLS/stage_args.py" "$2" "$3" \
        -- ${EXTRA[@]+"${EXTRA[@]}"} | tr '\0' '\n') || exit 2
    if [[ -n $selected ]]; then
        mapfile -t -O "${#target[@]}" target <<< "$selected"
    fi
}
split_args SCORE_ARGS "$SCORE_YAML" "$REFINER_YAML"
split_args REFINER_ARGS "$REFINER_YAML" "$SCORE_YAML"
if [[ ${#CHOICE_ARGS[@]} -gt 0 ]]; then
    echo "${CHOICE_ARGS[*]}" > "$MARKS/choices"
fi

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
STAGE1=(train_score.py "$SCORE_YAML" "${COMMON[@]}"
    --output_folder="$OUT/score" "${SCORE_ARGS[@]}")
STAGE2=(train_refiner.py "$REFINER_YAML" "${COMMON[@]}"
    --output_folder="$OUT/refiner"
    --stage1_folder="${STAGE1_FOLDER:-$OUT/score/model}"
    "${REFINER_ARGS[@]}")

step prepare "$PYTHON" "${STAGE1[@]}" --prepare_only
if [[ -n $STAGE1_FOLDER ]]; then
    echo "[run.sh] stage1: not trained, given: $STAGE1_FOLDER"
else
    step stage1 $LAUNCHER "${STAGE1[@]}"
fi
step cache $LAUNCHER "${STAGE2[@]}" --cache_only=True
step stage2 $LAUNCHER "${STAGE2[@]}"

# Collect the deliverables (cheap, always redone).
deliver() {  # deliver SOURCE TARGET: replace TARGET by a copy of SOURCE
    local tmp
    tmp=$(dirname "$2")/.$(basename "$2").tmp
    rm -rf "$tmp"
    cp -r "$1" "$tmp"
    rm -rf "$2"
    mv "$tmp" "$2"
}
deliver "$OUT/refiner/model" "$OUT/model"
deliver "$OUT/refiner/test_results.csv" "$OUT/results.csv"
if [[ -f $OUT/refiner/test_bins.csv ]]; then
    deliver "$OUT/refiner/test_bins.csv" "$OUT/results_bins.csv"
else
    rm -f "$OUT/results_bins.csv"
fi

echo "[run.sh] finished in $(( $(date +%s) - START )) s"
echo "[run.sh] two-stage model: $OUT/model"
echo "[run.sh] results (noisy / stage 1 / stage 1+2): $OUT/results.csv"
cat "$OUT/results.csv"
if [[ -f $OUT/results_bins.csv ]]; then
    echo "[run.sh] the same per bin of the test conditions: $OUT/results_bins.csv"
    cat "$OUT/results_bins.csv"
fi
