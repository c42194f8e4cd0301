"""SQLiteStore lets go of a long value once it is written: SQLite keeps its own
copy of every value bound to a statement until the statement is bound again,
and Python's sqlite3 keeps statements for reuse, so a long request, or a long
response's outcome, completion and sealed log, would otherwise stay in the
process's memory after their commit. Measured with SQLite's own count of the
memory it holds, read from the library Python's sqlite3 uses."""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
from pathlib import Path

import pytest
from stepwell import StepDescriptor
from stepwell.stores import SQLiteStore

LONG = "x" * 8_000_000
KEPT = {"request": {"model": "m", "input": "hi"}, "created_at": 0}


def _sqlite_library() -> ctypes.CDLL | None:
    """The SQLite library Python's sqlite3 runs on, if it is a shared one."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    library = ctypes.CDLL(name)
    library.sqlite3_libversion.restype = ctypes.c_char_p
    library.sqlite3_memory_used.restype = ctypes.c_int64
    if library.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None
    return library


LIBRARY = _sqlite_library()
pytestmark = pytest.mark.skipif(LIBRARY is None, reason="sqlite3 is not on a shared SQLite")


def held() -> int:
    """Bytes SQLite holds now, in this process."""
    assert LIBRARY is not None
    return int(LIBRARY.sqlite3_memory_used())


def delta(sequence: int, text: str) -> str:
    return (
        'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        f'"sequence_number":{sequence},"delta":"{text}"}}\n\n'
    )


async def recorded_model_call(store: SQLiteStore, request_id: str) -> str:
    await store.save_request(request_id, KEPT)
    step = await store.record_step(
        request_id, None, None, StepDescriptor.model_call({"messages": []})
    )
    await store.mark_step_processing(step.id)
    return step.id


async def test_a_long_request_outcome_and_completion_are_let_go_of_once_written(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "long.db")
    step_id = await recorded_model_call(store, "r")
    await store.save_request("fenced", KEPT, lease=("here", 30.0))
    fence = await store.claim("fenced", "here", 30.0)
    before = held()
    await store.save_request("long", {"request": {"model": "m", "input": LONG}, "created_at": 0})
    await store.complete_step(step_id, {"text": LONG})
    await store.set_outcome("r", "completed", {"text": LONG})
    await store.set_outcome("fenced", "completed", {"text": LONG}, fence=fence)
    # SQLite's page cache (2 MB by default) may have filled; one long value
    # held would be 8 MB.
    assert held() - before < 4_000_000
    assert (await store.step(step_id)).response_payload == {"text": LONG}
    assert await store.outcome("r") == ("completed", {"text": LONG})
    assert await store.outcome("fenced") == ("completed", {"text": LONG})
    assert await store.load_request("long") == {
        "request": {"model": "m", "input": LONG},
        "created_at": 0,
    }


async def test_a_long_response_ending_in_a_group_commit_is_let_go_of(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ending.db")
    step_id = await recorded_model_call(store, "r")
    # 20,000 deltas of 400 characters: the sealed log is 8 MB long.
    frames = [delta(sequence, "y" * 400) for sequence in range(20_000)]
    await store.group_commit([("r", 0, "".join(frames[:10_000]))])
    before = held()
    done = 'event: response.completed\ndata: {"sequence_number":20000}\n\n'
    refused, unmoved = await store.group_commit(
        [("r", 10_000, "".join(frames[10_000:]) + done)],
        ended=["r"],
        outcomes={"r": ("completed", {"text": LONG})},
        completions=[(step_id, {"text": LONG}, None)],
    )
    assert (refused, unmoved) == ([], [])
    assert held() - before < 4_000_000
    assert await store.events_after("r", 19_998) == [frames[-1], done]
    assert await store.outcome("r") == ("completed", {"text": LONG})
    assert (await store.step(step_id)).response_payload == {"text": LONG}
