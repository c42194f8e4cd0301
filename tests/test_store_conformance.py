"""The stores that ship with stepwell run the public conformance suite:
in memory, SQLite, and PostgreSQL (a real server: see `tests/pg.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from stepwell.stores import MemoryStore, SQLiteStore
from stepwell.stores.postgres import PostgresStore
from stepwell.testing.store_conformance import *  # noqa: F403

from . import pg


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    counter = iter(range(1_000_000))
    if request.param == "memory":
        yield MemoryStore
    elif request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path / f"store-{next(counter)}.db")
    else:
        server = request.getfixturevalue("postgres_server")
        made: list[PostgresStore] = []

        def make() -> PostgresStore:
            made.append(PostgresStore(pg.new_database(server)))
            return made[-1]

        yield make
        for store in made:
            await store.close()
