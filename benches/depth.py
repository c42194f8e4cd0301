"""S9 conversation depth: what one turn of a `previous_response_id` chain
costs as the chain grows.

One `Responses` over a `SQLiteStore` file, against the bench upstream (which
answers at once, whatever it is sent), creates a chain of responses, each
continuing the one before, three times over. The time of each `create` is
taken; the table shows the median of the five turns ending at each depth in
every chain (fifteen turns), and the deepest against the shallowest (the
goal: turn 400 within 2x turn 10). Only the upstream request itself may grow
with the conversation.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.stores import SQLiteStore
from stepwell.tools import HttpTools

WINDOW = 5
CHAINS = 3


async def depth(upstream_url: str, quick: bool) -> str:
    """The S9 table: milliseconds per turn at each depth, and the ratio."""
    depths = (5, 20) if quick else (10, 100, 400)
    chains: list[list[float]] = []
    errors = 0
    with tempfile.TemporaryDirectory(prefix="stepwell-s9-") as scratch:
        store = SQLiteStore(Path(scratch) / "s9.db")
        responses = Responses(store, HttpTools([]), UpstreamTarget(f"{upstream_url}/v1"))
        for _ in range(CHAINS):
            seconds: list[float] = []
            previous = None
            for _ in range(depths[-1]):
                body = {"model": "m", "input": "Go on."}
                if previous is not None:
                    body["previous_response_id"] = previous
                started = time.perf_counter()
                response = await responses.create(body)
                seconds.append(time.perf_counter() - started)
                if response["status"] != "completed":
                    errors += 1
                previous = response["id"]
            chains.append(seconds)
        store.close()
    rows = []
    at = {}
    for turn in depths:
        samples = [s for chain in chains for s in chain[turn - WINDOW : turn]]
        at[turn] = statistics.median(samples) * 1000
        rows.append([f"turn {turn}", f"{at[turn]:.2f} ms"])
    ratio = at[depths[-1]] / at[depths[0]]
    goal = f"{ratio:.2f}x turn {depths[0]} (<= 2x: {'met' if ratio <= 2 else 'missed'})"
    rows[-1].append(goal)
    header = "| depth | time of one turn (median of 15) | goal |\n| --- | --- | --- |\n"
    body = "\n".join("| " + " | ".join([*row, ""][:3]) + " |" for row in rows)
    setup = (
        f"{CHAINS} chains of {depths[-1]} responses, each continuing the one before "
        f"(`previous_response_id`); {errors} failed."
    )
    return f"{setup}\n\n{header}{body}"
