"""stepwell's benchmarks: streaming throughput, time to first delta, fan-out,
store-heavy concurrency and a stalled sink, each measured side by side with its
peers in one run on one machine.

    bash benches/run.sh            # full run: prints the tables, writes RESULTS.md + results.png
    bash benches/run.sh --quick    # small sizes, one repetition: proves every scenario works
    bash benches/run.sh --only S8  # one server scenario alone (S6-S10), its table printed

Every pipeline reads the same stream from a Rust upstream on loopback that
serves pre-rendered bytes from memory; its raw rate, read by curl into
/dev/null, is printed beside the results to show it is not the bottleneck.
Pipelines are interleaved across repetitions and medians are reported, so
machine noise lands on every pipeline alike; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import json
import os
import platform
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import stepwell
from httpx_sse import aconnect_sse
from openai import AsyncOpenAI
from stepwell import (
    AppendSteps,
    ChainStep,
    Complete,
    LoopConfig,
    LoopEvent,
    RequestContext,
    RunStats,
    StepDescriptor,
    ToolSchema,
    UpstreamTarget,
)
from stepwell.stores import MemoryStore
from stepwell.testing import CountingSink, ScriptedTransition

sys.path.insert(0, str(Path(__file__).resolve().parent))
import depth
import http_layer
import scale_out
from pyloop import py_run_response_loop

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_BIN = ROOT / "target" / "release" / "stepwell-bench-upstream"
LOADGEN_BIN = ROOT / "target" / "release" / "stepwell-bench-loadgen"
TOKENS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " dog."]
DELTA = "response.output_text.delta"


def expected_text(chunks: int) -> str:
    """The text the upstream streams in `chunks` chunks (same rule as its renderer)."""
    parts = []
    for i in range(chunks):
        for t in range(1 + i % 4):
            parts.append(TOKENS[(i % len(TOKENS) + t) % len(TOKENS)])
    return "".join(parts)


def say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- the upstream


class Upstream:
    """The Rust bench upstream, started on a free loopback port."""

    def __enter__(self) -> Upstream:
        self.process = subprocess.Popen([str(UPSTREAM_BIN), "0"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.strip().removeprefix("listening on ")
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait()

    @classmethod
    def at(cls, url: str) -> Upstream:
        """The upstream another process started at `url` (not stopped here)."""
        upstream = cls.__new__(cls)
        upstream.url = url
        return upstream

    def target(self) -> UpstreamTarget:
        return UpstreamTarget(self.url)

    def raw_rate(self, chunks: int) -> tuple[float, float]:
        """Chunks/s and MB/s of curl reading the stream into /dev/null (warm)."""
        body = json.dumps({"model": f"stream-{chunks}", "stream": True})
        command = [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            f"{self.url}/v1/chat/completions",
        ]
        subprocess.run(command, check=True, capture_output=True)  # renders and caches
        runs = []
        for _ in range(3):
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            size, seconds = out.split()
            runs.append((int(size), float(seconds)))
        size, seconds = min(runs, key=lambda r: r[1])
        return chunks / seconds, size / seconds / 1e6


def stream_request(chunks: int) -> dict[str, Any]:
    return {
        "model": f"stream-{chunks}",
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me about foxes."}],
    }


# ---------------------------------------------------------------- S1 pipelines


@dataclass
class Count:
    events: int = 0
    chars: int = 0


class CountingPySink:
    """A Python sink that counts delta events and characters, batch by batch."""

    def __init__(self) -> None:
        self.count = Count()
        self.first_delta_at: float | None = None

    def emit_many(self, events: list[LoopEvent]) -> None:
        count = self.count
        for event in events:
            if event.kind == DELTA:
                if self.first_delta_at is None:
                    self.first_delta_at = time.perf_counter()
                count.events += 1
                count.chars += len(event.delta)

    def emit(self, event: LoopEvent) -> None:
        self.emit_many([event])


class NoTools:
    async def tools(self, ctx: Any) -> list[ToolSchema]:
        return []

    async def execute(self, *args: Any) -> Any:
        raise NotImplementedError


def one_call_store(request: dict[str, Any]) -> MemoryStore:
    return MemoryStore(
        ScriptedTransition([AppendSteps([StepDescriptor.model_call(request)]), Complete(None)])
    )


class Pipelines:
    """Each S1 pipeline reads one stream and counts its delta events and characters."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.target = upstream.target()
        self.client = stepwell.HttpClient()
        # Block: every delta is delivered (and counted), the read waits for the sink.
        self.config = LoopConfig(bridge_capacity=4096, bridge_overflow="block")
        self.httpx = httpx.AsyncClient(timeout=None)
        self.aiohttp = aiohttp.ClientSession()
        self.openai = AsyncOpenAI(base_url=f"{upstream.url}/v1", api_key="unused")
        self.runs = 0

    async def close(self) -> None:
        await self.httpx.aclose()
        await self.aiohttp.close()
        await self.openai.close()

    def _request_id(self) -> str:
        self.runs += 1
        return f"bench-{self.runs}"

    async def stream_through(self, chunks: int, sink: Any) -> None:
        """One streaming model call of `chunks` chunks through stepwell into `sink`."""
        await stepwell.run_response_loop(
            one_call_store(stream_request(chunks)),
            NoTools(),
            RequestContext(),
            self.target,
            request_id=self._request_id(),
            sink=sink,
            config=self.config,
            client=self.client,
        )

    async def stepwell(self, chunks: int) -> Count:
        sink = CountingPySink()
        await self.stream_through(chunks, sink)
        return sink.count

    async def rust_ceiling(self, chunks: int) -> Count:
        sink = CountingSink()
        await self.stream_through(chunks, sink)
        # CountingSink counts every event; the stream adds created + completed.
        return Count(sink.events - 2, sink.delta_chars)

    async def httpx_sse(self, chunks: int) -> Count:
        count = Count()
        url = f"{self.upstream.url}/v1/chat/completions"
        async with aconnect_sse(self.httpx, "POST", url, json=stream_request(chunks)) as source:
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    break
                chunk = json.loads(sse.data)
                choices = chunk["choices"]
                if choices and (text := choices[0]["delta"].get("content")):
                    count.events += 1
                    count.chars += len(text)
        return count

    async def aiohttp_orjson(self, chunks: int) -> Count:
        count = Count()
        url = f"{self.upstream.url}/v1/chat/completions"
        async with self.aiohttp.post(url, json=stream_request(chunks)) as response:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                chunk = orjson.loads(data)
                choices = chunk["choices"]
                if choices and (text := choices[0]["delta"].get("content")):
                    count.events += 1
                    count.chars += len(text)
        return count

    async def openai_sdk(self, chunks: int) -> Count:
        count = Count()
        stream = await self.openai.chat.completions.create(
            model=f"stream-{chunks}",
            messages=[{"role": "user", "content": "Tell me about foxes."}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and (text := chunk.choices[0].delta.content):
                count.events += 1
                count.chars += len(text)
        return count


# ---------------------------------------------------------------- measurement


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = await run()
    return time.perf_counter() - start, result


@dataclass
class Row:
    cells: list[str]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def s1_throughput(p: Pipelines, chunks: int, reps: int) -> tuple[str, dict[str, float]]:
    pipelines: dict[str, Callable[[int], Awaitable[Count]]] = {
        "stepwell (Python sink, emit_many)": p.stepwell,
        "Rust-only ceiling (CountingSink)": p.rust_ceiling,
        "(a) httpx + httpx-sse + json.loads": p.httpx_sse,
        "(b) aiohttp lines + orjson": p.aiohttp_orjson,
        "(c) openai AsyncOpenAI stream": p.openai_sdk,
    }
    expected = expected_text(chunks)
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    errors = dict.fromkeys(pipelines, 0)
    for name, run in pipelines.items():  # warm connections and caches
        try:
            await run(min(chunks, 1000))
        except Exception:
            errors[name] += 1
    for rep in range(reps):
        for name, run in pipelines.items():
            # A pipeline that fails or miscounts is an error in its row; the run goes on.
            try:
                seconds, count = await timed(lambda run=run: run(chunks))
            except Exception as error:
                errors[name] += 1
                say(f"  S1 rep {rep + 1}/{reps}  {name:<38} failed: {error!r}")
                continue
            if (count.events, count.chars) != (chunks, len(expected)):
                errors[name] += 1
                continue
            times[name].append(seconds)
            say(f"  S1 rep {rep + 1}/{reps}  {name:<38} {seconds:8.3f} s")
    rates = {name: chunks / statistics.median(t) if t else 0.0 for name, t in times.items()}
    ours = rates["stepwell (Python sink, emit_many)"]
    # How many times the peer's rate stepwell must reach (the ceiling: a fraction).
    targets = {
        "Rust-only ceiling (CountingSink)": 0.5,
        "(a) httpx + httpx-sse + json.loads": 10,
        "(b) aiohttp lines + orjson": 5,
        "(c) openai AsyncOpenAI stream": 20,
    }
    rows = []
    for name, rate in rates.items():
        ratio = ours / rate if rate else 0.0
        target = targets.get(name)
        goal = "" if target is None or not rate else f">= {target}x: {verdict(ratio >= target)}"
        median = f"{statistics.median(times[name]):.3f}" if times[name] else "-"
        rows.append([name, median, f"{rate:,.0f}", f"{ratio:.2f}x", str(errors[name]), goal])
    text = table(["pipeline", "median s", "chunks/s", "stepwell ÷ this", "errors", "target"], rows)
    return text, rates


async def s2_first_delta(p: Pipelines, reps: int) -> str:
    chunks = 2000
    ours: list[float] = []
    peer: list[float] = []
    for _ in range(reps):
        sink = CountingPySink()
        start = time.perf_counter()
        await p.stream_through(chunks, sink)
        assert sink.first_delta_at is not None
        ours.append(sink.first_delta_at - start)

        start = time.perf_counter()
        first: float | None = None
        url = f"{p.upstream.url}/v1/chat/completions"
        async with aconnect_sse(p.httpx, "POST", url, json=stream_request(chunks)) as source:
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    break
                chunk = json.loads(sse.data)
                if (
                    first is None
                    and chunk["choices"]
                    and chunk["choices"][0]["delta"].get("content")
                ):
                    first = time.perf_counter()
        assert first is not None
        peer.append(first - start)
    a, b = statistics.median(ours), statistics.median(peer)
    say(f"  S2 stepwell {a * 1e3:.2f} ms, httpx {b * 1e3:.2f} ms")
    return table(
        ["pipeline", "median time to first delta", "target"],
        [
            ["stepwell", f"{a * 1e3:.2f} ms", f"no slower than (a): {verdict(a <= b)}"],
            ["(a) httpx + httpx-sse", f"{b * 1e3:.2f} ms", ""],
        ],
    )


class SleepyTools:
    """64 tools whose executor awaits 50 ms each."""

    async def tools(self, ctx: Any) -> list[ToolSchema]:
        return [ToolSchema("sleepy")]

    async def execute(self, name: str, call_id: str, args: Any, ctx: Any) -> Any:
        await asyncio.sleep(0.05)
        return {"ok": True}


async def s3_fan_out(p: Pipelines, model_chunks: int, reps: int) -> str:
    walls = []
    for _ in range(reps):
        store = MemoryStore(
            ScriptedTransition(
                [AppendSteps([StepDescriptor.tool_call("sleepy")] * 64), Complete(None)]
            )
        )
        seconds, _ = await timed(
            lambda store=store: stepwell.run_response_loop(
                store, SleepyTools(), RequestContext(), p.target, request_id=p._request_id()
            )
        )
        walls.append(seconds)
    wall = statistics.median(walls)
    say(f"  S3 64 tools x 50 ms: {wall * 1e3:.1f} ms")

    rates = []
    for _ in range(reps):
        sink = CountingPySink()
        calls = [StepDescriptor.model_call(stream_request(model_chunks))] * 64
        store = MemoryStore(ScriptedTransition([AppendSteps(calls), Complete(None)]))
        seconds, _ = await timed(
            lambda store=store, sink=sink: stepwell.run_response_loop(
                store,
                NoTools(),
                RequestContext(),
                p.target,
                request_id=p._request_id(),
                sink=sink,
                config=p.config,
                client=p.client,
            )
        )
        assert sink.count.events == 64 * model_chunks
        rates.append(sink.count.events / seconds)
    rate = statistics.median(rates)
    say(f"  S3 64 streams x {model_chunks} chunks: {rate:,.0f} events/s")
    return table(
        ["scenario", "median", "target"],
        [
            [
                "64 sibling tool calls, executor awaits 50 ms",
                f"{wall * 1e3:.1f} ms wall",
                f"≤ 60 ms: {verdict(wall <= 0.060)}",
            ],
            [
                f"64 sibling streaming model calls x {model_chunks} chunks",
                f"{rate:,.0f} events/s aggregate",
                "",
            ],
        ],
    )


class EchoTool:
    async def tools(self, ctx: Any) -> list[ToolSchema]:
        return [ToolSchema("echo")]

    async def execute(self, name: str, call_id: str, args: Any, ctx: Any) -> Any:
        return {"echo": args}


def three_step_decide(chain: list[ChainStep], request_id: str, scope_parent: str | None) -> Any:
    small = {"model": "small", "messages": [{"role": "user", "content": "hi"}]}
    if len(chain) == 0:
        return AppendSteps([StepDescriptor.model_call(small)])
    if len(chain) == 1:
        return AppendSteps([StepDescriptor.tool_call("echo", {"n": 1})])
    if len(chain) == 2:
        return AppendSteps([StepDescriptor.model_call(small)])
    return Complete({"steps": len(chain)})


async def s4_store_heavy(p: Pipelines, responses: int, reps: int) -> str:
    ours, theirs = [], []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(reps):
            store = MemoryStore(three_step_decide)
            seconds, results = await timed(
                lambda store=store: asyncio.gather(
                    *(
                        stepwell.run_response_loop(
                            store,
                            EchoTool(),
                            RequestContext(),
                            p.target,
                            request_id=f"s4-{n}",
                            client=p.client,
                        )
                        for n in range(responses)
                    )
                )
            )
            assert all(r == {"steps": 3} for r in results)
            ours.append(3 * responses / seconds)

            store = MemoryStore(three_step_decide)
            seconds, results = await timed(
                lambda store=store: asyncio.gather(
                    *(
                        py_run_response_loop(
                            store, EchoTool(), RequestContext(), p.target, session, f"s4-{n}"
                        )
                        for n in range(responses)
                    )
                )
            )
            assert all(r == {"steps": 3} for r in results)
            theirs.append(3 * responses / seconds)
            say(f"  S4 stepwell {ours[-1]:,.0f} steps/s, pure Python {theirs[-1]:,.0f} steps/s")
    a, b = statistics.median(ours), statistics.median(theirs)
    return table(
        ["loop", f"{responses} concurrent responses, 3 steps each", "target"],
        [
            ["stepwell", f"{a:,.0f} steps/s", f"≥ pure Python: {verdict(a >= b)} ({a / b:.2f}x)"],
            ["pure-Python asyncio loop (benches/pyloop.py, aiohttp)", f"{b:,.0f} steps/s", ""],
        ],
    )


def rss_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match
    return int(match.group(1))


S5_DRAIN = 1.0
"""Seconds the stalled sink's undelivered events are given once the run ended."""


async def s5_measure(p: Pipelines, chunks: int) -> dict[str, Any]:
    """A sink that never returns from its first call: the loop must still read
    the whole stream, persist the exact body, and return by itself once the
    drain timeout has run out, with every undelivered event counted."""
    step_done = asyncio.Event()
    never = asyncio.Event()

    class GatedStore(MemoryStore):
        async def complete_step(self, step_id: str, payload: Any) -> None:
            await super().complete_step(step_id, payload)
            step_done.set()

    class StalledSink:
        async def emit_many(self, events: list[LoopEvent]) -> None:
            await never.wait()

    expected = expected_text(chunks)
    # Render and cache the upstream's answer first, so only this process is measured.
    p.upstream.raw_rate(chunks)
    store = GatedStore(
        ScriptedTransition(
            [AppendSteps([StepDescriptor.model_call(stream_request(chunks))]), Complete(None)]
        )
    )
    stats = RunStats()
    gc.collect()
    before = rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
    run = asyncio.ensure_future(
        stepwell.run_response_loop(
            store,
            NoTools(),
            RequestContext(),
            p.target,
            request_id="s5",
            sink=StalledSink(),
            config=LoopConfig(bridge_overflow="drop_newest", sink_drain_timeout=S5_DRAIN),
            client=p.client,
            stats=stats,
        )
    )
    await asyncio.wait_for(step_done.wait(), 600)
    persisted_at = time.perf_counter()
    # No cancel: the loop returns by itself once the drain timeout has run out.
    await asyncio.wait_for(run, S5_DRAIN + 60)
    returned_after = time.perf_counter() - persisted_at
    peak = rss_kib("VmHWM")
    [step] = await store.steps("s5")
    content = step.response_payload["choices"][0]["message"]["content"]
    return {
        "growth": (peak - before) / 1024,
        "exact": content == expected,
        "content_mib": len(expected) / 2**20,
        "returned_after": returned_after,
        "dropped": stats.dropped_events,
    }


def s5_mapped(upstream: Upstream, chunks: int) -> dict[str, Any]:
    """`s5_measure` in a fresh process whose C allocator maps big blocks on
    their own, as `stepwell serve` and `stepwell worker` set it; its error, if
    it fails."""
    done = subprocess.run(
        [sys.executable, __file__, "--s5-child", str(chunks), upstream.url],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def s5_child(chunks: int, url: str) -> None:
    from stepwell.server.allocator import return_large_blocks

    assert return_large_blocks(), "glibc did not take the threshold"
    pipelines = Pipelines(Upstream.at(url))
    try:
        print(json.dumps(await s5_measure(pipelines, chunks)))
    finally:
        await pipelines.close()


async def s5_stalled_sink(p: Pipelines, chunks: int) -> str:
    rows = []
    mapped = "big blocks mapped on their own (as `stepwell serve` sets)"
    for allocator, found in (
        ("the C allocator as it is", await s5_measure(p, chunks)),
        (mapped, s5_mapped(p.upstream, chunks)),
    ):
        scenario = (
            f"{chunks:,} chunks, sink never returns, drop_newest, drain timeout {S5_DRAIN:g} s; "
            f"{allocator}"
        )
        if "error" in found:
            say(f"  S5 ({allocator}) failed: {found['error']}")
            rows.append([scenario, "", "", "", "", f"error: {found['error']}"])
            continue
        growth, exact = found["growth"], found["exact"]
        say(
            f"  S5 ({allocator}) peak RSS growth {growth:.1f} MiB, body exact: {exact}, returned "
            f"{found['returned_after']:.2f} s after the step persisted, "
            f"{found['dropped']:,} events dropped"
        )
        rows.append(
            [
                scenario,
                f"{growth:.1f} MiB",
                f"{'exact' if exact else 'WRONG'} ({found['content_mib']:.1f} MiB of text)",
                f"{found['returned_after']:.2f} s (by itself)",
                f"{found['dropped']:,}",
                f"≤ 16 MiB: {verdict(growth <= 16 and exact)}",
            ]
        )
    return table(
        [
            "scenario",
            "peak RSS growth",
            "reassembled body",
            "returned after the step persisted",
            "events counted as dropped",
            "target",
        ],
        rows,
    )


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = os.cpu_count()
    memory = rss_total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            rss_total = int(line.split()[1])
    memory = rss_total / 2**20
    return (
        f"{cpu}, {cores} cores, {memory:.0f} GiB; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; stepwell {stepwell.__version__}"
    )


def chart(rates: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rates)
    values = [rates[n] for n in names]
    fig, ax = plt.subplots(figsize=(9, 4))
    bars = ax.barh(names[::-1], values[::-1], color="#3b6ea8")
    ax.set_xscale("log")
    ax.set_xlim(right=max(values) * 5)  # room for the value labels
    ax.set_xlabel("chunks per second (log scale, higher is better)")
    ax.set_title("S1: consuming one 200,000-chunk LLM stream from Python")
    for bar, value in zip(bars, values[::-1], strict=True):
        ax.text(value, bar.get_y() + bar.get_height() / 2, f" {value:,.0f}", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------- S6/S7 servers


class Served:
    """A server in a child process; it prints a line ending in its URL once it
    listens."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().split()[-1]

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match
        return int(match.group(1)) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        return scale_out.cpu_seconds(self.process.pid)

    def reset_peak(self) -> bool:
        """Starts the server's peak RSS (`peak_rss_mib`) afresh from its RSS
        now; `False` where the kernel does not let this process do so."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) / 1024 if match else float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def stepwell_server(upstream: Upstream, db: Path) -> Served:
    serve = [sys.executable, "-m", "stepwell.cli", "serve", "--port", "0", "--no-auth"]
    return Served([*serve, "--upstream", f"{upstream.url}/v1", "--store", f"sqlite:{db}"])


def reference_server(upstream: Upstream) -> Served:
    return Served([sys.executable, str(ROOT / "benches" / "reference_server.py"), upstream.url])


def load(url: str, body: dict[str, Any], clients: int, requests: int, marker: str) -> Any:
    """One run of the Rust load generator against `url` (see `scale_out.load`)."""
    return scale_out.load([url], body, clients, requests, marker)


RESPONSES_DELTA = "event: response.output_text.delta"
CHAT_DELTA = '"delta":{"content"'


STEPWELL_S6 = "stepwell serve (SQLite, event log on)"
REFERENCE_S6 = "reference: Starlette + httpx + httpx-sse"


def s6_streaming_server(upstream: Upstream, quick: bool, reps: int) -> str:
    chunks, clients = (50, 32) if quick else (500, 256)
    requests = clients * (1 if quick else 4)
    body = {"model": f"stream-{chunks}", "input": "Tell me about foxes.", "stream": True}
    with tempfile.TemporaryDirectory() as scratch:
        stepwell = stepwell_server(upstream, Path(scratch) / "s6.db")
        reference = reference_server(upstream)
        try:
            targets = {
                "direct to the upstream (ceiling)": (
                    f"{upstream.url}/v1/chat/completions",
                    stream_request(chunks),
                    CHAT_DELTA,
                ),
                STEPWELL_S6: (
                    f"{stepwell.url}/v1/responses",
                    body,
                    RESPONSES_DELTA,
                ),
                REFERENCE_S6: (
                    f"{reference.url}/v1/responses",
                    body,
                    RESPONSES_DELTA,
                ),
            }
            for url, payload, marker in targets.values():  # warm up
                load(url, payload, 4, 8, marker)
            rates: dict[str, list[float]] = {name: [] for name in targets}
            errors = dict.fromkeys(targets, 0)
            servers = {STEPWELL_S6: stepwell, REFERENCE_S6: reference}
            cpu = dict.fromkeys(servers, 0.0)
            served = dict.fromkeys(servers, 0)
            for rep in range(reps):
                for name, (url, payload, marker) in targets.items():
                    before = servers[name].cpu_seconds() if name in servers else 0.0
                    result = load(url, payload, clients, requests, marker)
                    if name in servers:
                        cpu[name] += servers[name].cpu_seconds() - before
                        served[name] += requests - result["errors"]
                    # Streams cut short count as errors too: deltas missing.
                    short = requests - result["markers"] // chunks - result["errors"]
                    errors[name] += result["errors"] + max(short, 0)
                    seconds = result["seconds"]
                    rates[name].append(result["markers"] / seconds if seconds > 0 else 0.0)
                    say(f"  S6 rep {rep + 1}/{reps}  {name:<42} {rates[name][-1]:>12,.0f} deltas/s")
            # One client at a time, the upstream and stepwell in turn, rounds
            # of each: a shared machine's drift reaches both alike.
            single, rounds = (20, 2) if quick else (100, 5)
            runs: dict[str, list[float]] = {name: [] for name in list(targets)[:2]}
            for _ in range(rounds):
                for name, (url, payload, marker) in list(targets.items())[:2]:
                    runs[name].append(load(url, payload, 1, single, marker)["first_p50_ms"])
            firsts = {name: statistics.median(found) for name, found in runs.items()}
        finally:
            stepwell.stop()
            reference.stop()
    median = {name: statistics.median(r) for name, r in rates.items()}
    ours = median[STEPWELL_S6]
    ratio = ours / median[REFERENCE_S6] if median[REFERENCE_S6] else float("inf")
    added = firsts[STEPWELL_S6] - firsts["direct to the upstream (ceiling)"]
    rows = [
        [
            name,
            f"{rate:,.0f}",
            f"{rate / chunks:,.1f}",
            f"{1000 * cpu[name] / served[name]:.2f}" if served.get(name) else "",
            str(errors[name]),
            f"stepwell {ratio:.2f}x (>= 8x: {verdict(ratio >= 8)})" if name == REFERENCE_S6 else "",
        ]
        for name, rate in median.items()
    ]
    text = table(
        ["target", "deltas/s", "responses/s", "server CPU ms/response", "errors", "goal"], rows
    )
    ttfd = table(
        ["one client at a time", "time to first delta, p50", "goal"],
        [
            ["direct to the upstream", f"{firsts['direct to the upstream (ceiling)']:.2f} ms", ""],
            [
                "stepwell serve",
                f"{firsts['stepwell serve (SQLite, event log on)']:.2f} ms",
                f"added {added:.2f} ms (p50 <= 1 ms: {verdict(added <= 1)})",
            ],
        ],
    )
    setup = (
        f"{clients} concurrent streaming clients, {requests:,} responses of {chunks} chunks, "
        f"load from the Rust generator (benches/loadgen); medians of {reps}. Time to first "
        f"delta: the median of {rounds} rounds, each the p50 of {single} requests, the upstream "
        "and stepwell in turn."
    )
    return f"{setup}\n\n{text}\n\n{ttfd}"


def s10_soak(upstream: Upstream, quick: bool) -> str:
    """One `stepwell serve` on SQLite under rounds of steady load, streaming
    and non-streaming clients at once: its RSS after each round, and what the
    store holds per response and per streamed delta; then one long response
    from a fresh server, read fast and read slowly, and the RSS each costs."""
    chunks, streaming, plain = (20, 8, 4) if quick else (200, 32, 16)
    rounds, per_round = (2, 40) if quick else (8, 3_000)
    body = {"model": f"stream-{chunks}", "input": "Tell me about foxes.", "stream": True}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "s10.db"
        server = stepwell_server(upstream, db)
        try:
            responses = deltas = errors = 0
            for number in range(1, rounds + 1):
                with concurrent.futures.ThreadPoolExecutor(2) as pool:
                    streamed = pool.submit(
                        load, f"{server.url}/v1/responses", body, streaming, per_round,
                        RESPONSES_DELTA,
                    )  # fmt: skip
                    answered = pool.submit(
                        load, f"{server.url}/v1/responses", {**body, "stream": False}, plain,
                        per_round // 2, "",
                    )  # fmt: skip
                    result, other = streamed.result(), answered.result()
                responses += per_round + per_round // 2 - result["errors"] - other["errors"]
                deltas += result["markers"]
                errors += result["errors"] + other["errors"]
                rss = server.rss_mib()
                stored = sum(p.stat().st_size for p in Path(scratch).glob("s10.db*"))
                rows.append([
                    str(number), f"{responses:,}", f"{rss:.1f} MiB", f"{stored / 2**20:,.1f} MiB",
                    f"{stored / max(responses, 1):,.0f}", f"{stored / max(deltas, 1):,.0f}",
                    str(errors),
                ])  # fmt: skip
                say(f"  S10 round {number}/{rounds}: RSS {rss:.1f} MiB, store {stored:,} bytes")
            logged = event_log_bytes(db)
        finally:
            server.stop()
        long = 10_000 if quick else 100_000
        reads = {
            "as fast as it comes": long_response(upstream, Path(scratch), long, 0.0),
            "slowly (4 KiB / 2 ms)": long_response(upstream, Path(scratch), long, 0.002),
        }
    setup = (
        f"{streaming} streaming clients ({chunks} deltas each) and {plain} non-streaming ones "
        f"at once, {per_round:,} + {per_round // 2:,} responses per round, one `stepwell "
        "serve` on SQLite (event log on, replay window 10 minutes: every log is still kept), "
        "RSS read after each round."
    )
    per_delta = (logged["bytes"] - logged["text"]) / max(logged["deltas"], 1)
    log_table = table(
        ["sealed logs", "deltas in them", "bytes", "delta text bytes", "overhead/delta", "goal"],
        [[
            f"{logged['logs']:,}", f"{logged['deltas']:,}", f"{logged['bytes']:,}",
            f"{logged['text']:,}", f"{per_delta:.1f} bytes",
            f"<= 40 bytes: {verdict(per_delta <= 40)}",
        ]],
    )  # fmt: skip
    slow_table = table(
        [f"one {long:,}-delta response, read", "deltas read", "seconds", "server RSS fresh",
         "after a short response", "peak", "growth", "the same response again: growth"],
        [[
            name, f"{read['deltas']:,}", f"{read['seconds']:.1f}", f"{read['fresh']:.1f} MiB",
            f"{read['before']:.1f} MiB", f"{read['peak']:.1f} MiB",
            f"{read['peak'] - read['before']:.1f} MiB", f"{read['again']:.1f} MiB",
        ] for name, read in reads.items()],
    )  # fmt: skip
    headers = ["round", "responses", "server RSS", "store size", "bytes/response",
               "bytes/delta", "errors"]  # fmt: skip
    return (
        f"{setup}\n\n"
        + table(headers, rows)
        + "\n\nThe event logs of the streamed responses (their `events` rows, all sealed):\n\n"
        + log_table
        + "\n\nOne long response from a fresh server, twice; each peak is the kernel's "
        "high-water mark of the server's RSS (VmHWM), reset just before the response:\n\n"
        + slow_table
    )


def event_log_bytes(db: Path) -> dict[str, int]:
    """What the sealed event logs of a store hold: how many logs and deltas,
    their bytes, and the bytes of the delta text in them."""
    found = dict.fromkeys(["logs", "deltas", "bytes", "text"], 0)
    with sqlite3.connect(db) as connection:
        for (frames,) in connection.execute("SELECT frames FROM events"):
            deltas = [line for line in frames.split("\n") if line.startswith(":")]
            if deltas:  # a streamed response's (the others have no delta)
                found["logs"] += 1
                found["bytes"] += len(frames.encode())
                found["deltas"] += len(deltas)
                found["text"] += sum(len(line.encode()) - 1 for line in deltas)
    return found


def long_response(upstream: Upstream, scratch: Path, deltas: int, pause: float) -> dict[str, Any]:
    """Streams one response of `deltas` deltas from a fresh `stepwell serve`,
    reading 4 KiB every `pause` seconds (0: as fast as it comes; 0.002: about
    2 MB/s, far slower than the server writes it), while the server's RSS is
    watched; then the same response once more. The RSS before is read after
    one short response, so the growth is the long response's, not what the
    first request of a process loads. The peak is the kernel's high-water mark
    of the server's RSS, started afresh before each response, so a peak
    between two reads of the RSS (the commit that ends the response lasts
    some 20 ms) is not missed; where that mark cannot be reset, the highest
    RSS read while the response streams."""
    server = stepwell_server(upstream, scratch / f"long-{pause}.db")

    def peak_of(response: int) -> tuple[int, float]:
        exact = server.reset_peak()
        counted, sampled = stream_raw(server, response, pause)
        return counted, server.peak_rss_mib() if exact else sampled

    try:
        fresh = server.rss_mib()
        stream_raw(server, 20, 0.0)
        before = server.rss_mib()
        started = time.perf_counter()
        counted, peak = peak_of(deltas)
        seconds = time.perf_counter() - started
        after = server.rss_mib()
        _, again = peak_of(deltas)
        return {
            "deltas": counted,
            "seconds": seconds,
            "fresh": fresh,
            "before": before,
            "peak": peak,
            "again": again - after,
        }
    finally:
        server.stop()


def stream_raw(server: Served, deltas: int, pause: float) -> tuple[int, float]:
    """One streamed response of `deltas` deltas read off a plain socket, 4 KiB
    at a time with `pause` seconds between reads: the deltas counted, and the
    server's peak RSS meanwhile."""
    request = json.dumps({"model": f"stream-{deltas}", "input": "Go on.", "stream": True})
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    marker = RESPONSES_DELTA.encode()
    peak, tail = server.rss_mib(), b""
    with socket.create_connection((host, int(port))) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        connection.sendall(
            f"POST /v1/responses HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(request)}\r\nConnection: close\r\n\r\n{request}".encode()
        )
        counted, reads = 0, 0
        while chunk := connection.recv(4096):
            # The tail is shorter than a marker: a marker split between two
            # reads is counted once.
            window = tail + chunk
            counted += window.count(marker)
            tail = window[-(len(marker) - 1) :]
            reads += 1
            if reads % 64 == 0:
                peak = max(peak, server.rss_mib())
            if pause:
                time.sleep(pause)
    return counted, max(peak, server.rss_mib())


def s7_non_streaming(upstream: Upstream, quick: bool) -> str:
    clients, requests = 64, (200 if quick else 4000)
    body = {"model": "json", "input": "Tell me about foxes."}
    rows: list[list[str]] = []
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, start in (
            (
                "stepwell serve (SQLite, event log on)",
                lambda: stepwell_server(upstream, Path(scratch) / "s7.db"),
            ),
            ("reference: Starlette + httpx", lambda: reference_server(upstream)),
        ):
            served = start()
            try:
                url = f"{served.url}/v1/responses"
                load(url, body, 4, 16, "")
                before = served.cpu_seconds()
                result = load(url, body, clients, requests, "")
                done = requests - result["errors"]
                cpu = 1000 * (served.cpu_seconds() - before) / done if done else float("nan")
                seconds = result["seconds"]
                rate = done / seconds if seconds > 0 else 0.0
                peak = served.peak_rss_mib()
            finally:
                served.stop()
            rates.append(rate)
            rows.append([name, f"{rate:,.0f}", f"{cpu:.2f}", str(result["errors"]),
                         f"{peak:.0f} MiB", ""])  # fmt: skip
            say(f"  S7 {name:<42} {rate:>8,.0f} responses/s, {cpu:.2f} CPU ms each")
    ratio = rates[0] / rates[1] if rates[1] else float("inf")
    rows[1][-1] = f"stepwell {ratio:.2f}x (>= 2.5x: {verdict(ratio >= 2.5)})"
    setup = f"{clients} concurrent clients, {requests:,} responses, one model call each."
    return f"{setup}\n\n" + table(
        ["server", "responses/s", "server CPU ms/response", "errors", "server peak RSS", "goal"],
        rows,
    )


async def s8_scale_out(upstream: Upstream, quick: bool) -> str:
    setup, found = scale_out.scale_out(upstream.url, quick)
    rows = found.pop("rows")  # type: ignore[arg-type]
    rates: dict[str, float] = found

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    one = rates["PostgreSQL, 1 process"]
    two = rates["PostgreSQL, 2 processes"]
    cpu = {row[0]: float(row[5].split()[0]) for row in rows}
    growth = ratio(cpu["PostgreSQL, 4 processes"], cpu["PostgreSQL, 1 process"]) - 1
    vs_sqlite = ratio(one, rates["SQLite, 1 process"])
    goals = {
        "PostgreSQL, 1 process": f"{vs_sqlite:.2f}x SQLite (>= 0.6x: {verdict(vs_sqlite >= 0.6)})",
        "PostgreSQL, 2 processes": (
            f"{ratio(two, one):.2f}x one (>= 1.3x: {verdict(ratio(two, one) >= 1.3)})"
        ),
        "PostgreSQL, 4 processes": (
            f"CPU/response {growth:+.0%} vs one (<= +20%: {verdict(growth <= 0.2)})"
        ),
    }
    text = table(
        ["setup", "responses/s", "errors", "server CPU/response", "PostgreSQL CPU/response",
         "total CPU/response", "goal"],
        [[*row, goals.get(row[0], "")] for row in rows],
    )  # fmt: skip
    drivers = table(
        ["driver (64 tasks, pool of 10)", "transactions/s", "client CPU/transaction", "error"],
        await scale_out.drivers(quick),
    )
    return f"{setup}\n\n{text}\n\nThe two drivers on the store's shape of transaction:\n\n{drivers}"


def rust_table(*cargo_args: str) -> str:
    """Runs a Rust benchmark of this workspace and returns the table it printed."""
    printed = subprocess.run(
        ["cargo", *cargo_args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return "\n".join(line for line in printed.splitlines() if line.startswith("|"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="where RESULTS.md and results.png go",
    )
    parser.add_argument(
        "--only",
        choices=["S6", "S7", "S8", "S9", "S10", "S11"],
        help="run this server scenario alone and print its table (writes nothing)",
    )
    parser.add_argument("--s5-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.s5_child:
        await s5_child(int(args.s5_child[0]), args.s5_child[1])
        return
    quick = args.quick
    if args.only:
        with Upstream() as upstream:
            if args.only == "S6":
                print(s6_streaming_server(upstream, quick, 1 if quick else 3))
            elif args.only == "S7":
                print(s7_non_streaming(upstream, quick))
            elif args.only == "S9":
                print(await depth.depth(upstream.url, quick))
            elif args.only == "S10":
                print(s10_soak(upstream, quick))
            elif args.only == "S11":
                print(http_layer.http_layer(upstream.url, quick, Served, table))
            else:
                print(await s8_scale_out(upstream, quick))
        return
    sizes = {
        "s1": 2_000 if quick else 200_000,
        "reps": 1 if quick else 5,
        "s3": 200 if quick else 5_000,
        "s4": 50 if quick else 1_000,
        "s5": 20_000 if quick else 1_000_000,
    }
    say(f"stepwell benchmarks ({'quick' if quick else 'full'}) on {machine()}")
    with Upstream() as upstream:
        chunk_rate, mb_rate = upstream.raw_rate(sizes["s1"])
        upstream_line = (
            f"upstream raw rate (curl → /dev/null, {sizes['s1']:,} chunks): "
            f"{chunk_rate:,.0f} chunks/s, {mb_rate:,.0f} MB/s"
        )
        say(upstream_line)
        pipelines = Pipelines(upstream)
        try:
            say("S1 throughput")
            s1, rates = await s1_throughput(pipelines, sizes["s1"], sizes["reps"])
            say("S2 time to first delta")
            s2 = await s2_first_delta(pipelines, 5 if quick else 25)
            say("S3 fan-out")
            s3 = await s3_fan_out(pipelines, sizes["s3"], sizes["reps"])
            say("S4 store-heavy")
            s4 = await s4_store_heavy(pipelines, sizes["s4"], sizes["reps"])
            say("S5 stalled sink")
            s5 = await s5_stalled_sink(pipelines, sizes["s5"])
            say("S6 streaming through the server")
            s6 = s6_streaming_server(upstream, quick, 1 if quick else 3)
            say("S7 non-streaming through the server")
            s7 = s7_non_streaming(upstream, quick)
            say("S8 scale-out on one store")
            s8 = await s8_scale_out(upstream, quick)
            say("S9 conversation depth")
            s9 = await depth.depth(upstream.url, quick)
            say("S10 soak")
            s10 = s10_soak(upstream, quick)
            say("S11 the HTTP layer")
            s11 = http_layer.http_layer(upstream.url, quick, Served, table)
        finally:
            await pipelines.close()

    sections = [
        (
            f"S1 throughput: {sizes['s1']:,} chunks into a Python consumer counting events "
            "and delta characters",
            s1,
        ),
        ("S2 time to first delta (2,000-chunk stream)", s2),
        ("S3 fan-out", s3),
        ("S4 store-heavy (MemoryStore, 2 small model calls + 1 tool call per response)", s4),
        ("S5 stalled sink", s5),
        ("S6 streaming through `stepwell serve`", s6),
        ("S7 non-streaming through `stepwell serve`", s7),
        ("S8 scale-out: server processes on one store", s8),
        ("S9 conversation depth (library, SQLiteStore)", s9),
        ("S10 soak: memory and storage under steady load", s10),
        ("S11 the HTTP layer: `stepwell serve --server` and granian", s11),
    ]
    if not quick:
        say("the Rust stream path and the chunk parsers")
        sections += [
            (
                "The Rust stream path, stage by stage "
                "(`cargo bench -p stepwell-core --bench stream_path`)",
                rust_table("bench", "--quiet", "-p", "stepwell-core", "--bench", "stream_path"),
            ),
            (
                "JSON parsers on one chunk (`cargo run --release -p stepwell-bench-parsers`)",
                rust_table("run", "--quiet", "--release", "-p", "stepwell-bench-parsers"),
            ),
            (
                "S1: what was tried",
                (Path(__file__).resolve().parent / "S1_NOTES.md").read_text().strip(),
            ),
        ]
    report = "\n\n".join(f"## {title}\n\n{body}" for title, body in sections)
    print("\n" + upstream_line + "\n\n" + report)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RESULTS.md").write_text(
        f"# stepwell benchmark results\n\nPrinted by `bash benches/run.sh"
        f"{' --quick' if quick else ''}` on {stamp}.\n\nMachine: {machine()}.\n\n"
        f"{upstream_line}. Medians of {sizes['reps']} interleaved repetitions.\n\n"
        f"![S1 chart](results.png)\n\n{report}\n"
    )
    chart(rates, args.out / "results.png")
    say(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.png'}")


if __name__ == "__main__":
    asyncio.run(main())
