"""API keys and the tenants they belong to.

`--keys FILE` is a TOML file whose `[keys]` table maps each key to its tenant
(`"sk-live-1" = "acme"`). Only a SHA-256 digest of each key is kept, in memory;
the file is read once and the keys themselves are dropped. A key never appears
in a log line, a stored row or an error.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib


def digest(key: str) -> str:
    """The SHA-256 digest a key is known by."""
    return hashlib.sha256(key.encode()).hexdigest()


def load_keys(path: str | Path) -> dict[str, str]:
    """`{digest(key): tenant}` from a keys file; raises `ValueError` for a bad one."""
    table = tomllib.loads(Path(path).read_text()).get("keys")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: needs a [keys] table mapping each key to its tenant")
    keys = {}
    for key, tenant in table.items():
        if not isinstance(tenant, str) or not tenant:
            # Name the tenant's position, never the key.
            raise ValueError(f"{path}: every key's tenant must be a non-empty string")
        keys[digest(key)] = tenant
    return keys


def tenant_of(authorization: str | None, keys: Mapping[str, str]) -> str | None:
    """The tenant of a `Bearer` key, or `None` for a missing or unknown one.
    The scheme's name is case-insensitive, as HTTP's auth schemes are."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return keys.get(digest(key.strip()))
