#!/usr/bin/env bash
# Check that speechbrain_elbo installs beside an existing SpeechBrain
# environment at the lower bounds setup.py declares, keeps its versions, and
# passes the test suite there.
#
# 1. a fresh venv receives the user's stack first (default: the lower bounds
#    torch 2.9.1, torchaudio 2.9.1, SpeechBrain 1.1.0);
# 2. `pip install -e '.[dev]'` (no constraints file: as a user installs the
#    plugin) must leave those three versions untouched;
# 3. the whole suite runs there (ruff is skipped: its output does not depend
#    on torch).
#
# Usage: tools/check_lower_bounds.sh [VENV_DIR] [-- PYTEST_ARGS...]
#   TORCH=2.9.1 TORCHAUDIO=2.9.1 SPEECHBRAIN=1.1.0 tools/check_lower_bounds.sh
# On x86_64, PyPI's torch is the CUDA build: the venv takes about 7 GB.
set -euo pipefail
VENV="${1:-/tmp/speechbrain-elbo-lower}"
shift || true
[ "${1:-}" = "--" ] && shift
PYTHON="${PYTHON:-python3.11}"
TORCH="${TORCH:-2.9.1}"
TORCHAUDIO="${TORCHAUDIO:-2.9.1}"
SPEECHBRAIN="${SPEECHBRAIN:-1.1.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==$TORCH" "torchaudio==$TORCHAUDIO" \
    "speechbrain==$SPEECHBRAIN"
versions() {
    "$VENV/bin/python" -c "import importlib.metadata as m; \
print(' '.join(f'{p}=={m.version(p)}' for p in \
('torch', 'torchaudio', 'speechbrain')))"
}
before="$(versions)"
"$VENV/bin/pip" install -q -e "$ROOT[dev]"
after="$(versions)"
echo "before installing speechbrain_elbo: $before"
echo "after installing speechbrain_elbo:  $after"
if [ "$before" != "$after" ]; then
    echo "FAILED: installing speechbrain_elbo changed the user's versions." >&2
    exit 1
fi
cd "$ROOT"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "$VENV/bin/python" -m pytest -q "$@"
