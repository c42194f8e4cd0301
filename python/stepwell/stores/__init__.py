"""Stores that come with stepwell: in memory, and durable in SQLite."""

from .memory import Decide, IllegalTransition, MemoryStore
from .sqlite import SQLiteStore, StoreCorrupt, StoreLocked

__all__ = [
    "Decide",
    "IllegalTransition",
    "MemoryStore",
    "SQLiteStore",
    "StoreCorrupt",
    "StoreLocked",
]
