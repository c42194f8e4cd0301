"""What the command line's flags name: a store and an upstream."""

from __future__ import annotations

import os
from typing import Any

from .stores import open_store
from .types import UpstreamTarget


def store_named(spec: str | None) -> Any:
    """The store a ``--store`` flag names; exits with the reason for a bad one."""
    try:
        return open_store(spec)
    except ValueError as error:
        raise SystemExit(f"--store: {error}") from error


def upstream_target(base_url: str, api_key_env: str | None) -> UpstreamTarget:
    """The chat-completions target under ``base_url``, keyed from ``$api_key_env``."""
    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not key:
        raise SystemExit(f"${api_key_env} is not set")
    return UpstreamTarget(base_url.rstrip("/"), "/chat/completions", api_key=key)
