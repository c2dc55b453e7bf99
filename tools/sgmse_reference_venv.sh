#!/usr/bin/env bash
# Create a throw-away virtual environment with the reference package
# sgmse==0.1.2 (CPU torch), used only by tools/make_sgmse_fixtures.py.
# sgmse is never a dependency of speechbrain_elbo or of its tests.
#
# Usage: tools/sgmse_reference_venv.sh [VENV_DIR]   (default /tmp/sgmse-venv)
set -euo pipefail
VENV="${1:-/tmp/sgmse-venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# sgmse's own imports (model.py, data_module.py, util/): torch, torchaudio,
# numpy<2, scipy, pytorch-lightning, torch-ema, torch-pesq, pesq, pystoi,
# librosa. Its other declared requirements (wandb, gdown, seaborn, ...) are
# for training scripts and are not installed.
"$VENV/bin/pip" install -q torch torchaudio "numpy<2" scipy \
    pytorch-lightning torch-ema torch-pesq pesq pystoi librosa
"$VENV/bin/pip" install -q --no-deps sgmse==0.1.2
# sgmse imports torchaudio (for torchaudio.load, which the fixtures never
# call). When pip finds no torchaudio built for the installed torch, the
# compiled extension fails to load at import; torchaudio imports without it
# (its Python fallbacks), so remove the mismatched extension in that case.
if ! "$VENV/bin/python" -c "import torchaudio" 2>/dev/null; then
    TA_LIB="$("$VENV/bin/python" -c "import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec('torchaudio').origin).parent / 'lib')")"
    echo "torchaudio's extension does not match torch; removing $TA_LIB/*.so"
    rm -f "$TA_LIB"/_torchaudio*.so "$TA_LIB"/libtorchaudio*.so
fi
"$VENV/bin/python" -c "import sgmse.model; print('sgmse reference venv ready:', '$VENV')"
