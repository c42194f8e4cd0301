"""The event log's unit: a batch of Open Responses SSE frames.

A response's stream is persisted as it is sent, a batch at a time (one row, one
transaction, per batch the loop delivers), as the frames' own text. Frames in a
batch are consecutive events numbered from the batch's first
`sequence_number`, so a replay from any cursor is exact and byte for byte what
the live stream sent. A frame is `event: <type>\\ndata: <one line>\\n\\n`: its
JSON never holds a raw newline, so a blank line always ends a frame.
"""

from __future__ import annotations

from collections.abc import Iterable

FRAME_END = "\n\n"


def count_frames(text: str) -> int:
    """How many frames a batch holds."""
    return text.count(FRAME_END)


def split_frames(text: str) -> list[str]:
    """The frames of a batch, each with its closing blank line."""
    return [frame + FRAME_END for frame in text.split(FRAME_END) if frame]


def frames_after(batches: Iterable[tuple[int, str]], after: int) -> list[str]:
    """The frames numbered above `after`, from `(first_sequence, text)` batches
    given in order."""
    kept: list[str] = []
    for first, text in batches:
        kept += split_frames(text)[max(0, after + 1 - first) :]
    return kept
