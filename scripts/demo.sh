#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the quickstart: a two-round, tool-using response
# against a scripted upstream on loopback that the example starts itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/quickstart.py
