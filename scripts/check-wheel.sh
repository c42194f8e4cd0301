#!/usr/bin/env bash
# Packaging check: `pip install .` builds the release abi3 wheel, and it imports
# and runs in a clean virtualenv of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet .
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
