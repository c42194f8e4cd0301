"""Where a stream's first delta spends its time inside `stepwell serve`,
without instrumenting it: the server's system calls and thread wake-ups,
recorded by `perf` tracepoints while one client streams one response at a
time, cut into the marks of each request's path and printed as medians.

    python benches/trace_first_delta.py [--requests 200] [--model stream-500]

Needs `perf` and the right to trace another process (root, or
`kernel.perf_event_paranoid` <= 1). The marks, in microseconds after the
server read the request's bytes:

- the request's commit and the first step's commit: the main thread's first
  two bursts of writes to SQLite's write-ahead log;
- the model request written, and the upstream's answer read: tokio's first
  `writev`, then its first read, after the request;
- the delta handed to the event loop (the one-byte wake-up written by a tokio
  thread), and the loop's next look at its sockets, which sees it;
- the delta's commit and the delta sent to the client.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench

TRACEPOINTS = ",".join(
    f"syscalls:sys_{phase}_{call}"
    for phase, call in [
        ("enter", "recvfrom"),
        ("enter", "sendto"),
        ("enter", "writev"),
        ("enter", "pwrite64"),
        ("exit", "epoll_wait"),
    ]
)
_LINE = re.compile(r"\s*(\d+)/(\d+)\s+([\d.]+):\s+syscalls:sys_(\w+):\s*(.*)")
_BURST_GAP = 30e-6  # seconds between two WAL writes of one commit, at most
_WAKE_UP = 0x4000  # MSG_NOSIGNAL: the flag of the core's one-byte wake-ups
_REQUEST_READ = 0x40000  # how much the HTTP server asks for when it reads a request

Event = tuple[float, bool, str, dict[str, int]]
"""`(time, on the main thread, call, arguments)` of one traced call."""


def _events(data: Path) -> list[Event]:
    """Every traced call, in order."""
    script = ["perf", "script", "-i", str(data), "-F", "pid,tid,time,event,trace"]
    out = subprocess.run(script, capture_output=True, text=True, check=True).stdout
    events = []
    for line in out.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        pid, tid, at, call, rest = match.groups()
        args = {k: int(v, 16) for k, v in re.findall(r"(\w+): 0x([0-9a-f]+)", rest)}
        events.append((float(at), pid == tid, call, args))
    return events


def _marks(events: list[Event]) -> dict[str, list[float]]:
    """Each mark's time (us after the request was read) in every request."""
    reads = [
        i
        for i, (_, main, call, args) in enumerate(events)
        if main and call == "enter_recvfrom" and args.get("size") == _REQUEST_READ
    ]
    marks: dict[str, list[float]] = {}
    for start, end in itertools.pairwise(reads):
        t0, _, _, args = events[start]
        row = _request_marks(events[start:end], args["fd"])
        for name, at in (row or {}).items():
            marks.setdefault(name, []).append((at - t0) * 1e6)
    return marks


def _first(span: list[Event], after: float, client: int, test: Callable[..., bool]) -> float | None:
    """When the first call of `span` after `after` that passes `test` was made."""
    return next((at for at, *rest in span if at > after and test(*rest, client)), None)


_AFTER_THE_STEP: list[tuple[str, Callable[..., bool]]] = [
    (
        "the model request written (tokio)",
        lambda main, call, a, client: not main and call == "enter_writev",
    ),
    (
        "the upstream's answer read (tokio)",
        lambda main, call, a, client: not main and call == "enter_recvfrom",
    ),
    (
        "the delta handed to the event loop",
        lambda main, call, a, client: (
            not main and call == "enter_sendto" and a["flags"] == _WAKE_UP
        ),
    ),
    ("the event loop sees it", lambda main, call, a, client: main and call == "exit_epoll_wait"),
    ("the delta's commit", lambda main, call, a, client: main and call == "enter_pwrite64"),
    (
        "the delta sent to the client",
        lambda main, call, a, client: main and call == "enter_sendto" and a["fd"] == client,
    ),
]
"""The marks after the first step's commit, in order: each is the first call
that passes its test (`main thread, call, arguments, the client's socket`)
after the mark before."""


def _request_marks(span: list[Event], client: int) -> dict[str, float] | None:
    """The marks of one request's calls, `None` when some is missing."""
    commits: list[float] = []
    last = 0.0
    for at, main, call, _ in span:
        if main and call == "enter_pwrite64":
            if not commits or at - last > _BURST_GAP:
                commits.append(at)
            last = at
    if len(commits) < 2:
        return None
    row = {"the request's commit": commits[0], "the first step's commit": commits[1]}
    at = commits[1]
    for name, test in _AFTER_THE_STEP:
        found = _first(span, at, client, test)
        if found is None:
            return None
        row[name] = at = found
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--model", default="stream-500")
    options = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("trace_first_delta: needs `perf` (Debian: linux-perf)")
    chunks = int(options.model.split("-")[1])
    body = {"model": options.model, "input": "Tell me about foxes.", "stream": True}
    with bench.Upstream() as upstream, tempfile.TemporaryDirectory() as scratch:
        direct = bench.load(
            f"{upstream.url}/v1/chat/completions",
            bench.stream_request(chunks),
            1,
            options.requests,
            bench.CHAT_DELTA,
        )["first_p50_ms"]
        served = bench.stepwell_server(upstream, Path(scratch) / "trace.db")
        try:
            url = f"{served.url}/v1/responses"
            bench.load(url, body, 1, 50, bench.RESPONSES_DELTA)
            data = Path(scratch) / "perf.data"
            record = ["perf", "record", "-q", "-o", str(data), "-e", TRACEPOINTS]
            tracer = subprocess.Popen(
                [*record, "-p", str(served.process.pid)], stderr=subprocess.DEVNULL
            )
            time.sleep(1.0)  # perf attaches to the running threads before the load
            ours = bench.load(url, body, 1, options.requests, bench.RESPONSES_DELTA)
            tracer.send_signal(2)
            tracer.wait()
        finally:
            served.stop()
        marks = _marks(_events(data))
    heading = f"{options.model}, one client, {options.requests} requests"
    print(f"## Where the first delta goes ({heading})")
    print()
    print(f"First delta p50 at the client: stepwell {ours['first_p50_ms']:.2f} ms, "
          f"the upstream directly {direct:.2f} ms (traced run).")  # fmt: skip
    print()
    print("| mark | median us after the request was read | since the mark before | requests |")
    print("|------|------:|------:|------:|")
    before = 0.0
    for name, times in marks.items():
        at = statistics.median(times)
        print(f"| {name} | {at:.0f} | {at - before:.0f} | {len(times)} |")
        before = at


if __name__ == "__main__":
    main()
