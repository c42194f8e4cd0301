"""S11 the HTTP layer: `stepwell serve` on each way it can serve HTTP
(`--server`), and its app under granian, one after the other on one upstream:
S7's non-streaming responses/s, S6's streamed deltas/s, the time to first
delta of one client at a time, and the server's CPU milliseconds per
response (what a response costs whatever the machine). A run's errors are
counted in its row."""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scale_out

ROOT = Path(__file__).resolve().parent.parent
DELTA = "event: response.output_text.delta"


def layers(db: Path, upstream: str) -> dict[str, list[str]]:
    """The server commands measured, by name."""
    serve = [sys.executable, "-m", "stepwell.cli", "serve", "--port", "0", "--no-auth"]
    common = ["--upstream", f"{upstream}/v1", "--store", f"sqlite:{db}"]
    return {
        f"uvicorn: {name}": [*serve, *common, "--server", server]
        for server, name in (
            ("uvicorn-h11", "asyncio + h11 (a plain install)"),
            ("uvicorn", "asyncio + httptools (the default)"),
            ("uvicorn-uvloop", "uvloop + httptools"),
        )
    } | {
        "granian 2.8 (embedded, ASGI)": [
            sys.executable, str(ROOT / "benches" / "granian_serve.py"), f"{upstream}/v1", str(db),
        ],
    }  # fmt: skip


def measure(served: Any, quick: bool) -> dict[str, float]:
    url = f"{served.url}/v1/responses"
    plain = {"model": "json", "input": "Tell me about foxes."}
    streamed = {"model": f"stream-{50 if quick else 500}", "input": "Go.", "stream": True}
    scale_out.load([url], plain, 4, 16)  # warm up
    found: dict[str, float] = {"errors": 0}

    def run(body: dict[str, Any], clients: int, requests: int, marker: str) -> dict[str, Any]:
        before = served.cpu_seconds()
        result = scale_out.load([url], body, clients, requests, marker)
        done = requests - result["errors"]
        result["cpu_ms"] = 1000 * (served.cpu_seconds() - before) / done if done else float("nan")
        found["errors"] += result["errors"]
        return result

    s7 = run(plain, 64, 400 if quick else 4000, "")
    found["s7"] = (400 if quick else 4000) - s7["errors"]
    found["s7"] /= s7["seconds"] if s7["seconds"] > 0 else float("inf")
    found["s7_cpu"] = s7["cpu_ms"]
    s6 = run(streamed, 32 if quick else 256, 64 if quick else 1024, DELTA)
    found["s6"] = s6["markers"] / s6["seconds"] if s6["seconds"] > 0 else 0.0
    found["s6_cpu"] = s6["cpu_ms"]
    first = run(streamed, 1, 20 if quick else 100, DELTA)
    found["first"] = first["first_p50_ms"]
    return found


def http_layer(
    upstream: str,
    quick: bool,
    served_by: Callable[[list[str]], Any],
    table: Callable[[list[str], list[list[str]]], str],
) -> str:
    """The S11 table; `served_by` starts a server command (`bench.Served`),
    `table` renders one (`bench.table`)."""
    reps = 1 if quick else 3
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for rep in range(reps):
            for name, command in layers(Path(scratch) / f"s11-{rep}.db", upstream).items():
                served = served_by(command)
                try:
                    results.setdefault(name, []).append(measure(served, quick))
                finally:
                    served.stop()
                print(f"  S11 rep {rep + 1}/{reps} {name}: {results[name][-1]}", flush=True)
    direct = scale_out.load(
        [f"{upstream}/v1/chat/completions"],
        {"model": f"stream-{50 if quick else 500}", "stream": True, "messages": []},
        1,
        20 if quick else 100,
        '"delta":{"content"',
    )["first_p50_ms"]
    baseline = "uvicorn: asyncio + h11 (a plain install)"

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    rows = [
        [
            name,
            f"{median(name, 's7'):,.0f}",
            f"{median(name, 's7') / median(baseline, 's7'):.2f}x",
            f"{median(name, 's7_cpu'):.2f}",
            f"{median(name, 's6'):,.0f}",
            f"{median(name, 's6') / median(baseline, 's6'):.2f}x",
            f"{median(name, 's6_cpu'):.2f}",
            f"{median(name, 'first') - direct:+.2f} ms",
            f"{sum(r['errors'] for r in results[name]):.0f}",
        ]
        for name in results
    ]
    setup = (
        "One `stepwell serve` (SQLite, event log on) per row, on one upstream; S7: 64 clients, "
        f"{400 if quick else 4000:,} responses of one model call; S6: {32 if quick else 256} "
        f"streaming clients, {64 if quick else 1024:,} answers of {50 if quick else 500} chunks; "
        "first delta: one client at a time, p50 added over the upstream's own "
        f"({direct:.2f} ms); medians of {reps} rounds, the rows taking turns."
    )
    headers = ["server", "S7 responses/s", "vs h11", "CPU ms/response", "S6 deltas/s", "vs h11",
               "CPU ms/response", "first delta added", "errors"]  # fmt: skip
    return f"{setup}\n\n" + table(headers, rows)
