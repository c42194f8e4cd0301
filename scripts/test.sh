#!/usr/bin/env bash
# Sets up (see setup.sh), then runs every check: the Rust engine's tests, the
# Python suite, and the linters and type checker that keep the tree clean.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== cargo fmt / clippy"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test (stepwell-core)"
cargo test -p stepwell-core --quiet
echo "== ruff / mypy"
.venv/bin/ruff check python tests examples benches
.venv/bin/ruff format --check python tests examples benches
.venv/bin/mypy python/stepwell
echo "== stubtest (python/stepwell/_core.pyi against the built module)"
.venv/bin/python -m mypy.stubtest stepwell._core
echo "== pytest, the server tests on the other --server choices"
server_tests=$(grep -l 'stepwell.cli", "serve"\|from .test_server import' tests/test_*.py)
for server in uvicorn-h11 uvicorn-uvloop; do
    STEPWELL_SERVER=$server .venv/bin/pytest -q $server_tests
done
echo "== pytest"
.venv/bin/pytest -q
