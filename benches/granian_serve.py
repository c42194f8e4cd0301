"""`stepwell serve`'s app under granian (embedded in this process, ASGI over
HTTP/1), for S11 to measure beside uvicorn: granian is a peer measured, not a
`--server` choice (it served no more than uvicorn; see RESULTS.md).

    python benches/granian_serve.py UPSTREAM_URL SQLITE_PATH

Prints `serving on URL` once it listens.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server
from stepwell.server import ServerSettings, create_app
from stepwell.server.serve import build_responses, load_settings


def main() -> None:
    upstream, db = sys.argv[1], sys.argv[2]
    flags = {"upstream": upstream, "store": f"sqlite:{db}", "no_auth": True}
    app = create_app(build_responses(load_settings(flags, os.environ, None)), ServerSettings())
    # granian binds its own socket: take a free port, then give it back.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        backlog=1024,
        log_enabled=False,
    )

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve())
        while True:  # printed once it accepts connections
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if task.done():
                    await task
                await asyncio.sleep(0.01)
        print(f"serving on http://127.0.0.1:{port}", flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
