"""Both stores that ship with stepwell run the public conformance suite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stepwell.stores import MemoryStore, SQLiteStore
from stepwell.testing.store_conformance import *  # noqa: F403


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    counter = iter(range(1_000_000))
    if request.param == "memory":
        return MemoryStore
    return lambda: SQLiteStore(tmp_path / f"store-{next(counter)}.db")
