"""A store named by a string, as `stepwell run`, `serve` and `worker` take it."""

from __future__ import annotations

from typing import Any

from .memory import MemoryStore
from .sqlite import SQLiteStore


def open_store(spec: str | None) -> Any:
    """The store ``spec`` names: ``memory`` (the default), ``sqlite:PATH``, or
    ``postgresql://...`` (a PostgreSQL URL). Raises ``ValueError`` for anything
    else."""
    if not spec or spec == "memory":
        return MemoryStore()
    if spec.startswith("sqlite:"):
        return SQLiteStore(spec.removeprefix("sqlite:"))
    if spec.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(spec)
    raise ValueError(f"a store is 'memory', 'sqlite:PATH' or 'postgresql://...', not {spec!r}")
