#!/usr/bin/env bash
# Create the benchmark-only environment for ScanCode (the peer licence scanner of benchmarks/licenses.py).
# ScanCode needs pins that conflict with Curate's (it runs here with pluggy==1.5.0), so it gets its own venv.
# Usage: bash benchmarks/setup_scancode.sh [VENV_DIR]   (default /work/bench-venvs/scancode; idempotent)
set -euo pipefail
VENV="${1:-${SCANCODE_VENV:-/work/bench-venvs/scancode}}"
PY="${PYTHON:-python3}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import scancode.api" 2>/dev/null; then
    echo "scancode venv ready: $VENV"; exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'scancode-toolkit-mini==32.5.0' 'pluggy==1.5.0'
# The first import builds ScanCode's licence index (a minute or two); do it now, not inside the timed run.
"$VENV/bin/python" -c "from licensedcode.cache import get_index; get_index(); print('scancode index built')"
echo "scancode venv ready: $VENV"
