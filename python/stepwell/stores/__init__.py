"""Stores that come with stepwell: in memory, and durable in SQLite."""

from ._transition import Decide, IllegalTransition, WithTransition
from .memory import MemoryStore
from .sqlite import SQLiteStore, StoreCorrupt, StoreLocked

__all__ = [
    "Decide",
    "IllegalTransition",
    "MemoryStore",
    "SQLiteStore",
    "StoreCorrupt",
    "StoreLocked",
    "WithTransition",
]
