"""`stepwell serve`: settings from flags, a TOML file and `STEPWELL_*` variables,
then the app under uvicorn.

Precedence: a flag, then its `STEPWELL_<NAME>` variable (e.g.
`STEPWELL_UPSTREAM`), then the TOML file given by `--config` (keys named like
the flags: `upstream = "..."`, `max_body = 1048576`), then the default.
"""

from __future__ import annotations

import argparse
import gc
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib


@dataclass(frozen=True)
class Settings:
    """Everything `stepwell serve` can be told."""

    upstream: str = ""
    """The chat-completions base URL, e.g. ``http://127.0.0.1:8000/v1``."""
    api_key_env: str | None = None
    """The environment variable holding the upstream's key."""
    compaction_key_env: str | None = None
    """The environment variable holding the secret that seals compaction
    items (the same in every process of a deployment); without it, a random
    one per process."""
    store: str = "sqlite:./stepwell.db"
    """``sqlite:PATH`` or ``memory``."""
    tools: str | None = None
    """HTTP tools declared in a TOML or JSON file."""
    mcp: str | None = None
    """MCP servers declared in a TOML file, their tools served to every
    request (of the tenants each allows)."""
    host: str = "127.0.0.1"
    port: int = 8080
    """0 picks a free port (printed on start)."""
    max_body: int = 16 * 1024 * 1024
    """Largest request body, in bytes."""
    grace: float = 30.0
    """Seconds foreground responses get to finish on SIGTERM."""
    server: str = "uvicorn"
    """How HTTP is served: ``uvicorn`` (asyncio's loop, the httptools parser),
    ``uvicorn-h11`` (the pure-Python parser) or ``uvicorn-uvloop``."""
    header_timeout: float = 10.0
    """Seconds a client may take to send a request's headers."""
    body_timeout: float = 30.0
    """Seconds a client may take between two pieces of a request's body."""
    websocket_max_age: float = 3600.0
    """Seconds a WebSocket connection lasts before it is closed."""
    lease_ttl: float = 10.0
    """Seconds before a response whose process died is taken over by another."""
    max_runs: int = 64
    """Most queued (background) responses this process runs at once."""
    retention: str | None = None
    """Delete responses this long after they ended (``30d``, ``12h``, ``90m``,
    ``45s``), with their steps and events; ``None`` keeps them."""
    replay_window: str = "10m"
    """Keep an ended response's event log this long (for its stream to be read
    again), then only the response; ``forever`` keeps it with the response."""
    keys: str | None = None
    """A TOML file whose ``[keys]`` table maps each API key to its tenant."""
    no_auth: bool = False
    """Serve without authentication, as one tenant (local use only)."""


SERVERS = {
    "uvicorn": ("asyncio", "httptools"),
    "uvicorn-h11": ("asyncio", "h11"),
    "uvicorn-uvloop": ("uvloop", "httptools"),
}
"""How `stepwell serve --server` runs uvicorn: `(event loop, HTTP parser)`.
The default is asyncio's loop with the httptools parser (the `server` extra
installs it). Over ten runs of `benches/` S11 (nine full runs, one alone) on
one 2-core machine, uvloop served 0.68x to 1.31x of the default's S7
responses/s (median 0.93x) and 0.83x to 1.03x of its S6 deltas/s (median
0.94x): more only now and then, within the machine's noise, so it is not the
default. `uvicorn-h11` is what a plain install of uvicorn runs,
`uvicorn-uvloop` needs uvloop installed."""


def _coerce(name: str, value: Any) -> Any:
    if name == "no_auth":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off", ""):
            return False
        raise SystemExit(f"no_auth must be true or false, not {value!r}")
    kinds = {
        "port": int,
        "max_body": int,
        "grace": float,
        "header_timeout": float,
        "body_timeout": float,
        "websocket_max_age": float,
        "lease_ttl": float,
        "max_runs": int,
    }
    if name in kinds:
        try:
            return kinds[name](value)
        except (TypeError, ValueError) as error:
            raise SystemExit(f"{name} must be a number, not {value!r}") from error
    return value


def load_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config: str | None,
    *,
    serving: bool = True,
) -> Settings:
    """Settings from flags (``None`` when not given), `STEPWELL_*` variables and a
    TOML file, in that order of precedence. A server (`serving`) needs keys or
    ``--no-auth``; a worker serves nothing and needs neither."""
    from_file: dict[str, Any] = {}
    if config:
        from_file = tomllib.loads(Path(config).read_text())
        unknown = set(from_file) - {f.name for f in fields(Settings)}
        if unknown:
            raise SystemExit(f"{config}: unknown settings {sorted(unknown)}")
    values: dict[str, Any] = {}
    for field in fields(Settings):
        for source in (
            flags.get(field.name),
            environ.get(f"STEPWELL_{field.name.upper()}"),
            from_file.get(field.name),
        ):
            if source is not None:
                values[field.name] = _coerce(field.name, source)
                break
    settings = Settings(**values)
    if not settings.upstream:
        raise SystemExit("an upstream is needed: --upstream URL (or STEPWELL_UPSTREAM)")
    if settings.retention is not None:
        parse_duration(settings.retention)
    replay_window(settings)  # a bad one stops the start, not a later prune
    if serving and settings.server not in SERVERS:
        raise SystemExit(f"--server is one of {', '.join(SERVERS)}; not {settings.server!r}")
    if serving and not settings.keys and not settings.no_auth:
        raise SystemExit("API keys are needed: --keys FILE (or --no-auth, for local use only)")
    return settings


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s`` or a plain number of seconds."""
    value, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    try:
        seconds = float(value) * _UNITS[unit]
    except ValueError:
        seconds = -1
    if not seconds >= 0:
        raise SystemExit(f"a duration is a number with s, m, h or d, like 30d; not {text!r}")
    return seconds


def settle_garbage_collector() -> None:
    """Tunes the cyclic garbage collector for a long-running server, once it
    is set up: what exists now (modules, the app) is frozen out of every
    later collection, and the youngest generation is collected every 20,000
    allocations rather than 700. A response allocates thousands of short-lived
    objects that reference counting frees anyway; a collection after every
    700 of them was CPU spent on each response for next to nothing found."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def replay_window(settings: Settings) -> float | None:
    """The replay window in seconds; `None` for `forever`."""
    if settings.replay_window == "forever":
        return None
    return parse_duration(settings.replay_window)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every process that runs responses (`serve`, `worker`)."""
    parser.add_argument("--config", help="a TOML file of settings")
    parser.add_argument("--upstream", help="chat-completions base URL, e.g. http://host/v1")
    parser.add_argument("--api-key-env", help="environment variable holding the upstream key")
    parser.add_argument(
        "--compaction-key-env",
        help="environment variable holding the secret that seals compaction items "
        "(default: a random one per process)",
    )
    parser.add_argument(
        "--store", help="'sqlite:PATH' (default ./stepwell.db), 'postgresql://...' or 'memory'"
    )
    parser.add_argument("--tools", help="HTTP tools declared in a TOML or JSON file")
    parser.add_argument("--mcp", help="MCP servers declared in a TOML file")
    parser.add_argument(
        "--lease-ttl",
        help="seconds before a response whose process died is taken over (default 10)",
    )
    parser.add_argument(
        "--max-runs", help="most queued (background) responses run at once here (default 64)"
    )
    parser.add_argument(
        "--retention", help="delete responses this long after they end, e.g. 30d (default: keep)"
    )
    parser.add_argument(
        "--replay-window",
        help="keep an ended response's event log this long for replay, then only the "
        "response (default 10m; 'forever' keeps it)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` flags."""
    add_run_arguments(parser)
    parser.add_argument("--host", help="default 127.0.0.1")
    parser.add_argument(
        "--server",
        help="how HTTP is served: 'uvicorn' (asyncio + httptools; the default), "
        "'uvicorn-h11' (asyncio + h11) or 'uvicorn-uvloop' (uvloop + httptools)",
    )
    parser.add_argument("--port", help="default 8080; 0 picks a free one")
    parser.add_argument("--max-body", help="largest request body in bytes (default 16 MiB)")
    parser.add_argument(
        "--grace", help="seconds foreground responses get to finish on SIGTERM (default 30)"
    )
    parser.add_argument(
        "--header-timeout", help="seconds a client may take to send its headers (default 10)"
    )
    parser.add_argument(
        "--body-timeout",
        help="seconds a client may take between two pieces of its body (default 30)",
    )
    parser.add_argument(
        "--websocket-max-age",
        help="seconds a WebSocket connection lasts before it is closed (default 3600)",
    )
    parser.add_argument("--keys", help="TOML file: a [keys] table mapping each key to its tenant")
    parser.add_argument(
        "--no-auth",
        action="store_const",
        const=True,
        help="serve without authentication, as one tenant (local use only)",
    )


def build_responses(settings: Settings) -> Any:
    """The `Responses` a process runs: its store, tools and upstream."""
    from .._config import store_named, upstream_target
    from ..openresponses import Responses
    from ..tools import HttpTools, Toolbox
    from ..types import LoopConfig

    tools: Any = HttpTools.from_file(settings.tools) if settings.tools else HttpTools([])
    mcp = None
    if settings.mcp:
        from ..tools.mcp import McpTools

        try:
            mcp = McpTools.from_file(settings.mcp)
        except (OSError, ValueError) as error:
            raise SystemExit(f"--mcp: {error}") from error
        tools = Toolbox(tools, mcp)
    target = upstream_target(settings.upstream, settings.api_key_env)
    secret = None
    if settings.compaction_key_env:
        value = os.environ.get(settings.compaction_key_env)
        if not value:
            raise SystemExit(f"--compaction-key-env: ${settings.compaction_key_env} is not set")
        secret = value.encode()
    # The sink is the event log, which never waits for a client: a burst of
    # deltas faster than this process frames them waits for it rather than
    # being dropped, so the log (and every stream of it) holds every delta.
    config = LoopConfig(bridge_overflow="block")
    return Responses(
        store_named(settings.store), tools, target, compaction_key=secret, mcp=mcp, config=config
    )


def serve(args: argparse.Namespace) -> int:
    """Builds the app from the settings and serves it until interrupted."""
    import uvicorn

    from ._uvicorn import StoppingServer, check, run, with_header_deadline
    from .allocator import return_large_blocks
    from .app import ServerSettings, create_app
    from .auth import load_keys

    settings = load_settings(vars(args), os.environ, args.config)
    check(settings.server)
    responses = build_responses(settings)
    keys = None
    if settings.keys:
        try:
            keys = load_keys(settings.keys)
        except (OSError, ValueError) as error:
            raise SystemExit(f"--keys: {error}") from error
    else:
        print(
            "stepwell: WARNING: --no-auth: every request is served without authentication, "
            "as one tenant. For local use only.",
            file=sys.stderr,
            flush=True,
        )
    server_settings = ServerSettings(
        max_body=settings.max_body,
        body_timeout=settings.body_timeout,
        websocket_max_age=settings.websocket_max_age,
        keys=keys,
        lease_ttl=settings.lease_ttl,
        max_runs=settings.max_runs,
        retention=parse_duration(settings.retention) if settings.retention else None,
        replay_window=replay_window(settings),
    )
    app = create_app(responses, server_settings)
    # Bound here, not by uvicorn, so port 0 works and the address is known
    # before the first request: connections wait in the backlog until served.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's frames go out as written,
    # not held back until the client acknowledges the previous write.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(1024)
    host, port = sock.getsockname()[:2]
    # On SIGTERM uvicorn stops accepting and gives open requests (foreground
    # responses) `grace` seconds; the app then stops background runs unmarked.
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=int(settings.grace),
        http=with_header_deadline(settings.header_timeout, settings.server),
    )
    server = StoppingServer(config, app.state.begin_stop)
    settle_garbage_collector()
    return_large_blocks()
    print(f"stepwell serving on http://{host}:{port}", flush=True)
    run(settings.server, server.serve(sockets=[sock]))
    return 0
