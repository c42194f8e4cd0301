"""The event log's unit: a batch of Open Responses SSE frames.

A response's stream is persisted as it is sent, a batch at a time (one row per
batch the loop delivers): a batch holding deltas sealed on its own (below),
any other as the frames' own text. Frames in a
batch are consecutive events numbered from the batch's first
`sequence_number`, so a replay from any cursor is exact and byte for byte what
the live stream sent. A frame is `event: <type>\\ndata: <one line>\\n\\n`: its
JSON never holds a raw newline, so a blank line always ends a frame.

Once the response ended, its batches are *sealed*: replaced by one row holding
the whole log compactly (each delta frame as its text and two bytes, every
other frame as it was but for the texts it repeats), from which the same
frames are rendered again.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._core import SEALED_LOG, LogSealer, unseal_log
from .._core import count_frames as count_frames  # how many frames a batch holds

FRAME_END = "\n\n"


def split_frames(text: str) -> list[str]:
    """The frames of a batch, each with its closing blank line."""
    return [frame + FRAME_END for frame in text.split(FRAME_END) if frame]


def event_rows(batches: Iterable[tuple[str, int, str]]) -> list[tuple[str, int, int, str]]:
    """The rows `(request_id, first_sequence, last_sequence, frames)` of the
    batches `(request_id, first_sequence, frames)` that hold any frame."""
    counted = [(r, first, count_frames(frames), frames) for r, first, frames in batches]
    return [(r, first, first + n - 1, frames) for r, first, n, frames in counted if n]


def stored_rows(rows: Iterable[tuple[str, int, int, str]]) -> list[tuple[str, int, int, str]]:
    """`event_rows` as a store writes them, each batch as `stored_batch` has it."""
    return [(r, first, last, stored_batch(frames, first)) for r, first, last, frames in rows]


def stored_batch(frames: str, first_sequence: int) -> str:
    """A batch as a row holds it: sealed on its own when it holds a delta, so
    a streamed delta costs its text and two bytes from the moment it is
    written, not only once its response ended and the log was sealed whole
    (a fast stream's batches were written, checkpointed into the database
    file and deleted again, at ~200 bytes a delta); other batches, and one
    holding a character a sealed log reserves, as they are."""
    if _DELTA not in frames:
        return frames
    sealer = LogSealer(first_sequence)
    sealer.push(frames)
    return sealer.finish() or frames


_DELTA = ".delta\ndata: "  # in a batch holding a delta frame, only there


def is_sealed(text: str) -> bool:
    """Whether a row holds a sealed log rather than a batch."""
    return text.startswith(SEALED_LOG)


def frames_after(
    batches: Iterable[tuple[int, str]], after: int, limit: int | None = None
) -> list[str]:
    """The frames numbered above `after`, at most `limit` of them, from
    `(first_sequence, text)` rows (batches or a sealed log) given in order."""
    kept: list[str] = []
    for first, text in batches:
        room = None if limit is None else limit - len(kept)
        if room is not None and room <= 0:
            break
        if is_sealed(text):
            kept += unseal_log(text, first, after, room)
        else:
            start = max(0, after + 1 - first)
            kept += split_frames(text)[start : None if room is None else start + room]
    return kept


class Sealing:
    """A response's log being sealed, a row at a time in order (batches, or a
    sealed log), so a long log is never held whole: only its sealed form
    grows."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.count = 0
        self.rows = 0
        self.already_sealed = False
        self._sealer: LogSealer | None = None

    def add(self, first_sequence: int, text: str) -> None:
        if self._sealer is None:
            self.first = first_sequence
            self._sealer = LogSealer(first_sequence)
        self.rows += 1
        if is_sealed(text):
            self.already_sealed = True
            # Joined as it is kept: its deltas are not rendered again.
            self.count += self._sealer.push_sealed(text, first_sequence)
        else:
            self.count += self._sealer.push(text)

    def result(self) -> tuple[int, int, str] | None:
        """The sealed row `(first_sequence, last_sequence, text)`; `None` when
        there was nothing, or it was sealed already, or it holds what a sealed
        log cannot."""
        if self._sealer is None or self.first is None or (self.rows == 1 and self.already_sealed):
            return None
        text = self._sealer.finish()
        return None if text is None else (self.first, self.first + self.count - 1, text)


def sealed(rows: Iterable[tuple[int, str]]) -> tuple[int, int, str] | None:
    """A response's whole log, its `(first_sequence, text)` rows in order, as
    one sealed row (see `Sealing.result`)."""
    sealing = Sealing()
    for first, text in rows:
        sealing.add(first, text)
    return sealing.result()


def last_wanted(after: int, limit: int | None) -> int:
    """The highest first sequence number of a row a read of `limit` frames
    after `after` may need (a store's sequence numbers are 32-bit)."""
    return _LAST if limit is None else min(after + limit, _LAST)


_LAST = 2**31 - 1
