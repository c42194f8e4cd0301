"""A SQLite store's log copied back into its database file off the caller's thread.

In WAL mode every commit appends to the log, and by default the commit that
takes the log past 1,000 pages also copies it back into the database file
and syncs both: a pause of milliseconds in whichever call happened to commit
then, on the thread that runs everything else (the event loop's). Here a
thread of the store's own does that copying every `INTERVAL` seconds the
store wrote, on a connection of its own; SQLite releases the GIL while it
works, and a passive checkpoint never blocks a writer or a reader.

The log restarts from its beginning only when a writer finds all of it
copied, which a copy racing steady commits may never achieve: the commits
themselves still checkpoint, but only once the log passes `WRITER_PAGES`
(by then nearly everything in it is copied, so theirs is short).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("stepwell.stores")

INTERVAL = 0.05
"""Seconds between the copies, while the store writes."""

WRITER_PAGES = 4000
"""The log's length in pages at which a commit checkpoints for itself."""

_ROUNDS = 4  # copies in a row while commits keep adding to the log


class Checkpointer:
    """Copies the log of the WAL-mode database at `path` back into it from a
    daemon thread, while `wrote` says there is something to copy. It holds no
    reference to the store, so a store dropped unclosed stops it (see
    `close`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._written = False
        self._stop = threading.Event()
        self.copied = threading.Event()
        """Set after each copy (cleared by whoever waits for the next)."""
        self._thread = threading.Thread(
            target=self._run, name="stepwell-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def wrote(self) -> None:
        """The store committed: its log grew."""
        self._written = True

    def close(self) -> None:
        """Stops the thread (after the copy under way) and waits for it."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            log.warning("the SQLite log cannot be checkpointed in the background: %s", error)
            return
        try:
            while not self._stop.wait(INTERVAL):
                if self._written:
                    self._written = False
                    self._copy(db)
                    self.copied.set()
        finally:
            db.close()

    @staticmethod
    def _copy(db: sqlite3.Connection) -> None:
        """Copies what the log holds; again while commits made during a copy
        left some of it behind, so the log can restart from its beginning."""
        for _ in range(_ROUNDS):
            try:
                _busy, pages, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as error:  # a locked or vanished file: the writers checkpoint
                log.debug("background checkpoint skipped: %s", error)
                return
            if copied >= pages:
                return
