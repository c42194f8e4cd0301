#!/usr/bin/env bash
# Prepares a fresh checkout: a .venv with the build and test tools, and stepwell
# built into it (a debug build; set MATURIN_ARGS=--release for a release one).
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests run the PostgreSQL store against a real server.
bash scripts/install-postgres.sh

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
# maturin installs into the active virtualenv.
VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" \
    .venv/bin/maturin develop --quiet ${MATURIN_ARGS:-}
