"""The SQLite store's log is copied back into its database file by a thread of
its own, so the commits of the event loop's thread rarely do it themselves."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path

from stepwell.stores import SQLiteStore
from stepwell.stores._checkpoint import WRITER_PAGES


def _in_the_file_alone(path: Path, request_id: str) -> bool:
    """Whether the database file, read without its log, holds `request_id`."""
    file = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        query = "SELECT 1 FROM responses WHERE request_id = ?"
        return file.execute(query, (request_id,)).fetchone() is not None
    except sqlite3.OperationalError:  # not even the table is there yet
        return False
    finally:
        file.close()


def _thread_of(store: SQLiteStore) -> threading.Thread:
    assert store._checkpointer is not None
    return store._checkpointer._thread


async def test_what_the_store_commits_is_copied_into_the_file_by_its_own_thread(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    checkpointer = store._checkpointer
    assert checkpointer is not None
    try:
        (limit,) = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert limit == WRITER_PAGES  # the commits checkpoint only past a long log
        for n in range(20):
            await store.save_request(f"r{n}", {"model": "m", "input": "x" * 5000})
        # Reading the database file alone (not the log) finds the last of
        # them once a copy of the thread's brought it there; the log is far
        # shorter than what makes a commit checkpoint for itself.
        while True:
            checkpointer.copied.clear()
            if _in_the_file_alone(tmp_path / "s.db", "r19"):
                break
            assert checkpointer.copied.wait(10), "no copy came"
        assert (await store.load_request("r19"))["input"] == "x" * 5000
    finally:
        store.close()


def test_a_closed_or_dropped_store_stops_its_thread(tmp_path: Path) -> None:
    closed = SQLiteStore(tmp_path / "a.db")
    dropped = SQLiteStore(tmp_path / "b.db")
    threads = [_thread_of(closed), _thread_of(dropped)]
    assert all(thread.is_alive() for thread in threads)
    closed.close()
    del dropped
    gc.collect()
    assert not any(thread.is_alive() for thread in threads)


def test_a_database_in_memory_has_no_log_to_copy() -> None:
    store = SQLiteStore(":memory:")
    try:
        assert store._checkpointer is None
    finally:
        store.close()
