#!/usr/bin/env bash
# Create (or reuse) the Python environment, keyed on requirements.lock, outside the clone,
# link it at .venv, and install the project itself into it (editable, no dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
KEY="$( (cat requirements.lock; "$PYTHON" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)"
CACHE_ROOT="${TRIAGE_ENV_CACHE:-$HOME/.cache/pacs-triage}"
ENV_DIR="$CACHE_ROOT/venv-$KEY"

if [ ! -f "$ENV_DIR/.complete" ]; then
    echo "ensure-env: building environment $ENV_DIR (first time for this lock file)"
    rm -rf "$ENV_DIR"
    mkdir -p "$CACHE_ROOT"
    "$PYTHON" -m venv "$ENV_DIR"
    "$ENV_DIR/bin/pip" install --quiet --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
    "$ENV_DIR/bin/pip" install --quiet --no-deps -r requirements.lock
    "$ENV_DIR/bin/pip" check
    touch "$ENV_DIR/.complete"
fi

if [ "$(readlink .venv 2>/dev/null || true)" != "$ENV_DIR" ]; then
    rm -rf .venv
    ln -s "$ENV_DIR" .venv
fi
.venv/bin/pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || .venv/bin/pip install --no-deps --no-build-isolation -e .
echo "ensure-env: .venv -> $ENV_DIR"
