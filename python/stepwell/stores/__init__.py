"""Stores that come with stepwell: in memory, durable in SQLite, and shared by
many processes on PostgreSQL (`stepwell.stores.postgres`, imported on use)."""

from ._open import open_store
from ._transition import BatchedWrites, Decide, IllegalTransition, WithTransition
from .memory import MemoryStore
from .sqlite import SQLiteStore, StoreCorrupt, StoreLocked

__all__ = [
    "BatchedWrites",
    "Decide",
    "IllegalTransition",
    "MemoryStore",
    "SQLiteStore",
    "StoreCorrupt",
    "StoreLocked",
    "WithTransition",
    "open_store",
]
