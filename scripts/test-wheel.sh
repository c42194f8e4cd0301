#!/usr/bin/env bash
# Runs the test suite against the built wheel (target/wheels, from
# scripts/check-wheel.sh) on each Python given, by default the oldest and the
# newest supported: 3.10 and 3.13, as pyenv provides them. Each gets a clean
# virtualenv with the wheel and requirements-test.txt, so the suite imports the
# installed package, not the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.10 3.13)
wheel=$(ls target/wheels/stepwell-*.whl 2>/dev/null | head -n 1)
[ -n "$wheel" ] || { echo "no wheel in target/wheels: run scripts/check-wheel.sh" >&2; exit 1; }
pyenv_root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")

for version in "${versions[@]}"; do
    python=$(ls -d "$pyenv_root"/versions/"$version".*/bin/python3 2>/dev/null | sort -V | tail -n 1)
    [ -n "$python" ] || { echo "no Python $version under $pyenv_root/versions" >&2; exit 1; }
    scratch=$(mktemp -d)
    "$python" -m venv "$scratch/venv"
    "$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
    "$scratch/venv/bin/python" -m pip install --quiet "$wheel" -r requirements-test.txt
    echo "== pytest on $("$scratch/venv/bin/python" --version) against $(basename "$wheel")"
    "$scratch/venv/bin/python" -c 'import stepwell, sys; assert "site-packages" in stepwell.__file__, stepwell.__file__'
    "$scratch/venv/bin/python" -m pytest -q -p no:cacheprovider tests
    rm -rf "$scratch"
done
