"""The Open Responses HTTP server: `create_app(responses)` is an ASGI app to
serve or mount; `stepwell serve` runs it under uvicorn. Needs the `server`
extra (`pip install stepwell[server]`); it is imported on first use, so the
rest of stepwell (and `stepwell run`) works without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'stepwell.server' has no attribute {name!r}")
