"""A throwaway PostgreSQL cluster on loopback for the tests.

`STEPWELL_TEST_POSTGRES` names a server to use instead (a URL whose user may
create databases). Otherwise one is made with the binaries Debian's
`postgresql` package installs (`scripts/setup.sh` installs them): initdb in a
temporary directory, trust auth on 127.0.0.1 only, run as the `postgres` user
when the tests run as root (the server refuses root). Each test gets a
database of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    if not found[-1]:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run scripts/setup.sh")
    return found[-1]


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A PostgreSQL server in a temporary directory, until `stop`."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="stepwell-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
        self.data = self.directory / "data"
        self.port = _free_port()
        subprocess.run(
            _as_server_user(
                [_binary("initdb"), "-D", str(self.data), "-U", "stepwell", "--auth=trust",
                 "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.start()
        self.url = f"postgresql://stepwell@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, action: str) -> None:
        options = f"-k {self.directory} -h 127.0.0.1 -p {self.port} -c max_connections=300"
        subprocess.run(
            _as_server_user(
                [_binary("pg_ctl"), "-D", str(self.data), "-o", options,
                 "-l", str(self.directory / "server.log"), "-w", action]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        self.pg_ctl("start")

    def restart(self) -> None:
        self.pg_ctl("restart")

    def stop(self) -> None:
        try:
            self.pg_ctl("stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def server() -> Iterator[str]:
    """The URL of a server for the session: `STEPWELL_TEST_POSTGRES`, or a
    throwaway cluster."""
    given = os.environ.get("STEPWELL_TEST_POSTGRES")
    if given:
        yield given
        return
    cluster = Cluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


def new_database(server_url: str) -> str:
    """A fresh, empty database on the server; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    subprocess.run(
        ["psql", server_url, "-q", "-c", f"CREATE DATABASE {name}"],
        check=True,
        capture_output=True,
    )
    return server_url.rsplit("/", 1)[0] + f"/{name}"
