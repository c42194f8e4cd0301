#!/usr/bin/env bash
# The benchmarks in one command: builds stepwell (release unless MATURIN_ARGS says
# otherwise) and the bench upstream, installs the peers, then runs every
# scenario. `--quick` proves they work in seconds; a full run writes
# benches/RESULTS.md and benches/results.png.
set -euo pipefail
cd "$(dirname "$0")/.."
MATURIN_ARGS="${MATURIN_ARGS---release}" bash scripts/setup.sh
.venv/bin/python -m pip install --quiet -r benches/requirements.txt
cargo build --release --quiet -p stepwell-bench-upstream -p stepwell-bench-loadgen
exec .venv/bin/python benches/bench.py "$@"
