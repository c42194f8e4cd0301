"""S8 scale-out: `stepwell serve` processes on one store, and the two PostgreSQL
drivers side by side.

Responses of one model call and one tool call each (the bench upstream
answers both at once) from the Rust load generator, spread over 1, 2 and 4
server processes on one PostgreSQL, and 1 process on SQLite. Beside each row:
the CPU seconds per response of the server processes and of PostgreSQL (the
postmaster and every backend), so what coordination costs shows whatever the
machine. A run's errors are counted in its row, never a reason to stop.

The driver comparison runs the store's shape of work (a short transaction:
insert an event row, renew a lease, read it back) from 64 concurrent tasks
through asyncpg's pool and psycopg 3's, in one process, one after the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOADGEN_BIN = ROOT / "target" / "release" / "stepwell-bench-loadgen"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


class Cluster:
    """A throwaway PostgreSQL cluster (scripts/postgres.sh) and its CPU time."""

    def __enter__(self) -> Cluster:
        self.directory = tempfile.mkdtemp(prefix="stepwell-s8-")
        printed = subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "start", self.directory],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        self.url = printed.strip().split("=", 1)[1]
        postmaster = Path(self.directory, "data", "postmaster.pid").read_text().split()[0]
        self.postmaster = int(postmaster)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "postgres.sh"), "stop", self.directory], check=False
        )

    def database(self) -> str:
        name = f"s8_{uuid.uuid4().hex[:10]}"
        subprocess.run(["psql", self.url, "-q", "-c", f"CREATE DATABASE {name}"], check=True)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def cpu(self) -> float:
        """CPU seconds of the postmaster and its live backends. A backend that
        exited took its time with it: the servers keep theirs open (pools)."""
        total = 0.0
        for pid in [self.postmaster, *children_of(self.postmaster)]:
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total


class Serve:
    """`stepwell serve` in a child process."""

    def __init__(self, upstream: str, store: str, tools: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stepwell.cli", "serve", "--port", "0", "--no-auth",
             "--upstream", f"{upstream}/v1", "--store", store, "--tools", str(tools)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().split()[-1]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def load(
    urls: list[str], body: dict[str, Any], clients: int, requests: int, marker: str = ""
) -> Any:
    """One run of the Rust load generator over `urls` (spread among them): its
    JSON summary. Failed requests are counted in it (the tables show them),
    never a reason to stop; a run that printed nothing counts every request
    failed."""
    printed = subprocess.run(
        [str(LOADGEN_BIN), ",".join(urls), json.dumps(body), str(clients), str(requests), marker],
        capture_output=True,
        text=True,
    ).stdout
    try:
        return json.loads(printed)
    except ValueError:
        return {"requests": requests, "errors": requests, "markers": 0, "seconds": float("nan"),
                "first_p50_ms": float("nan"), "first_p99_ms": float("nan")}  # fmt: skip


def scale_out(upstream: str, quick: bool) -> tuple[str, dict[str, float]]:
    clients, requests = (32, 200) if quick else (256, 4000)
    body = {"model": "tool", "input": "Look it up."}
    rows, rates = [], {}
    with tempfile.TemporaryDirectory() as scratch, Cluster() as cluster:
        tools = Path(scratch) / "tools.toml"
        tools.write_text(
            f'[[tool]]\nname = "lookup"\nurl = "{upstream}/tool"\n'
            'parameters = { type = "object", properties = { q = { type = "integer" } } }\n'
        )
        setups = [
            ("SQLite, 1 process", lambda: f"sqlite:{Path(scratch) / 's8.db'}", 1),
            ("PostgreSQL, 1 process", cluster.database, 1),
            ("PostgreSQL, 2 processes", cluster.database, 2),
            ("PostgreSQL, 4 processes", cluster.database, 4),
        ]
        for name, store, processes in setups:
            spec = store()
            servers = [Serve(upstream, spec, tools) for _ in range(processes)]
            try:
                urls = [f"{s.url}/v1/responses" for s in servers]
                load(urls, body, 8, 32)  # warm up: pools, first migrations
                before = sum(cpu_seconds(s.process.pid) for s in servers)
                database_before = cluster.cpu() if spec.startswith("postgresql") else 0.0
                result = load(urls, body, clients, requests)
                served = sum(cpu_seconds(s.process.pid) for s in servers) - before
                database = cluster.cpu() - database_before if spec.startswith("postgres") else 0
            finally:
                for server in servers:
                    server.stop()
            done = result["requests"] - result["errors"]
            seconds = result["seconds"]
            rate = done / seconds if done and seconds == seconds else 0.0
            rates[name] = rate
            server_ms = served / done * 1000 if done else float("nan")
            database_ms = database / done * 1000 if done else float("nan")
            rows.append(
                [
                    name,
                    f"{rate:,.0f}",
                    str(result["errors"]),
                    f"{server_ms:.2f} ms",
                    f"{database_ms:.2f} ms" if spec.startswith("postgres") else "",
                    f"{server_ms + database_ms:.2f} ms",
                ]
            )
            print(
                f"  S8 {name:<26} {rate:>8,.0f} responses/s, {result['errors']} errors", flush=True
            )
    setup = (
        f"{clients} concurrent clients, {requests:,} responses of one model call and one tool "
        "call each, spread over the server processes; CPU per response of the servers and of "
        "PostgreSQL (postmaster and backends)."
    )
    return setup, rates | {"rows": rows}  # type: ignore[dict-item]


async def drivers(quick: bool) -> list[list[str]]:
    """Transactions/s and client CPU per transaction, asyncpg against psycopg 3."""
    import asyncpg
    import psycopg_pool

    tasks, each = (16, 50) if quick else (64, 300)
    rows = []
    with Cluster() as cluster:
        url = cluster.database()
        setup = await asyncpg.connect(url)
        await setup.execute(
            "CREATE TABLE leases (id TEXT PRIMARY KEY, expires TIMESTAMPTZ);"
            "CREATE TABLE events (id TEXT, n INTEGER, frames TEXT, PRIMARY KEY (id, n));"
        )
        await setup.executemany(
            "INSERT INTO leases VALUES ($1, now())", [(f"r{i}",) for i in range(tasks)]
        )
        await setup.close()

        async def with_asyncpg() -> None:
            pool = await asyncpg.create_pool(url, min_size=10, max_size=10)

            async def work(task: int) -> None:
                for n in range(each):
                    async with pool.acquire() as db, db.transaction():
                        await db.execute(
                            "INSERT INTO events VALUES ($1, $2, $3)", f"a{task}", n, "x" * 200
                        )
                        await db.execute(
                            "UPDATE leases SET expires = now() WHERE id = $1", f"r{task}"
                        )
                        await db.fetchval("SELECT expires FROM leases WHERE id = $1", f"r{task}")

            await asyncio.gather(*(work(t) for t in range(tasks)))
            await pool.close()

        async def with_psycopg() -> None:
            pool = psycopg_pool.AsyncConnectionPool(url, min_size=10, max_size=10, open=False)
            await pool.open()

            async def work(task: int) -> None:
                for n in range(each):
                    async with pool.connection() as db, db.transaction():
                        await db.execute(
                            "INSERT INTO events VALUES (%s, %s, %s)", (f"p{task}", n, "x" * 200)
                        )
                        await db.execute(
                            "UPDATE leases SET expires = now() WHERE id = %s", (f"r{task}",)
                        )
                        cursor = await db.execute(
                            "SELECT expires FROM leases WHERE id = %s", (f"r{task}",)
                        )
                        await cursor.fetchone()

            await asyncio.gather(*(work(t) for t in range(tasks)))
            await pool.close()

        for name, run in (
            ("asyncpg 0.32", with_asyncpg),
            ("psycopg 3 + psycopg_pool", with_psycopg),
        ):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                await run()
                error = ""
            except Exception as failure:  # a peer's error is reported, not fatal
                error = repr(failure)[:60]
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            count = tasks * each
            rows.append([name, f"{count / wall:,.0f}", f"{cpu / count * 1e6:.0f} µs", error])
            print(f"  S8 driver {name:<26} {count / wall:>8,.0f} transactions/s", flush=True)
    return rows
