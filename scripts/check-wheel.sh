#!/usr/bin/env bash
# Packaging check: builds the release abi3 wheel into target/wheels (where
# scripts/test-wheel.sh finds it), and checks that it installs, imports and
# runs in a clean virtualenv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
wheels="$PWD/target/wheels"
rm -f "$wheels"/stepwell-*.whl
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" .
wheel=$(ls "$wheels"/stepwell-*.whl)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet "$wheel"
cd "$scratch"
"$scratch/venv/bin/python" - <<'PY'
import asyncio

import stepwell
from stepwell import Complete, RequestContext, UpstreamTarget
from stepwell.stores import MemoryStore


class NoTools:
    async def tools(self, ctx):
        return []


result = asyncio.run(stepwell.run_response_loop(
    MemoryStore(lambda chain, rid, scope: Complete({"ok": True})), NoTools(),
    RequestContext(), UpstreamTarget("http://127.0.0.1:9"), request_id="wheel-check",
))
assert result == {"ok": True}, result
print("wheel OK:", stepwell.__file__)
PY
