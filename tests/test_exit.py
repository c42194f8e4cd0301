"""The interpreter exits cleanly right after loops complete.

Completing the awaitable from a tokio thread that enters Python can race the
interpreter's finalization and crash the process at exit; stepwell completes
it on the event loop thread instead. This runs a burst of streaming loops and
exits at once, several times, and requires a clean exit every time. The race
it guards against needs a loaded machine to show (it was seen about once in 40
runs there), so this is a guard, not a reproducer.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio
from stepwell import AppendSteps, Complete, RequestContext, StepDescriptor, UpstreamTarget
from stepwell import run_response_loop
from stepwell.stores import MemoryStore
from stepwell.testing import RecordingSink, ScriptedTransition, ScriptedUpstream
from stepwell.testing import StreamReply, text_chunks

class NoTools:
    async def tools(self, ctx):
        return []

async def main(endpoint):
    async def one(n):
        store = MemoryStore(ScriptedTransition([
            AppendSteps([StepDescriptor.model_call({"model": "m", "stream": True})]),
            Complete(n),
        ]))
        return await run_response_loop(store, NoTools(), RequestContext(),
                                       UpstreamTarget(endpoint), request_id=f"r{n}",
                                       sink=RecordingSink())
    assert await asyncio.gather(*(one(n) for n in range(20))) == list(range(20))

with ScriptedUpstream(lambda r: StreamReply(text_chunks(["a", "b", "c"]))) as upstream:
    asyncio.run(main(upstream.endpoint))
print("clean")
"""


def test_exit_right_after_loops_is_clean() -> None:
    for _ in range(10):
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
        )
        assert (run.returncode, run.stdout.strip()) == (0, "clean"), run.stderr
