"""Hostile input against `stepwell serve` (two tenants, SQLite): each class of
bad input gets a 4xx in OpenAI's error shape that says what is wrong and never
how, no traceback reaches the log, and the store holds nothing half-done
afterwards (every kept response is finished, and every GET of one is a 200)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from stepwell import UpstreamTarget
from stepwell.openresponses import Responses
from stepwell.stores import MemoryStore
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion
from stepwell.tools import HttpTools

from .test_server import Server

KEYS = '[keys]\n"sk-alpha" = "alpha"\n"sk-beta" = "beta"\n'
ALPHA = {"authorization": "Bearer sk-alpha"}
# Words that would show a client how the server failed rather than what it refused.
INTERNALS = ("Traceback", "Error:", "sqlite", "utf-8", "codec", "set_int_max_str_digits",
             "site-packages", "127.0.0.1", "OverflowError", "TypeError")  # fmt: skip


def model(request: UpstreamRequest) -> JsonReply:
    return JsonReply(chat_completion("fine"))


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream(model) as server:
        yield server


@pytest.fixture
def served(upstream: ScriptedUpstream, tmp_path: Path) -> Iterator[Server]:
    keys = tmp_path / "keys.toml"
    keys.write_text(KEYS)
    running = Server(
        upstream.endpoint,
        tmp_path / "hostile.db",
        "--keys", str(keys), "--max-body", "65536",
        "--header-timeout", "1", "--body-timeout", "1",
    )  # fmt: skip
    yield running
    running.stop()


@pytest.fixture
async def http(served: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, headers=ALPHA, timeout=30) as client:
        yield client


def refused(answer: httpx.Response, status: int = 400, param: str | None = None) -> dict[str, Any]:
    """Checks an error answer's status and shape; returns its error object."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    for word in INTERNALS:
        assert word not in error["message"], error["message"]
    return error


def assert_nothing_half_done(served: Server, db: Path) -> None:
    """Every kept response is finished, readable, and no traceback was logged."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT request_id, status, output FROM responses").fetchall()
    for request_id, status, output in rows:
        assert output is not None, (request_id, status)
        answer = httpx.get(f"{served.url}/v1/responses/resp_{request_id}", headers=ALPHA)
        assert answer.status_code in (200, 404), answer.text
        items = httpx.get(f"{served.url}/v1/responses/resp_{request_id}/input_items", headers=ALPHA)
        assert items.status_code in (200, 404), items.text
    assert "Traceback" not in served.log.read_text()


WRONG_TYPES = [
    ({"model": "m", "input": "x", "tools": 5}, "tools"),
    ({"model": "m", "input": [{"role": ["user"], "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]},
     "input[0].content[0].text"),
    ({"model": "m", "input": "x", "metadata": 5}, "metadata"),
    ({"model": "m", "input": "x", "top_p": 5}, "top_p"),
    ({"model": "m", "input": "x", "temperature": -5}, "temperature"),
    ({"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens"),
    ({"model": "m", "input": "x", "text": "json"}, "text"),
    ({"model": "m", "input": "x", "reasoning": []}, "reasoning"),
    ({"model": "m", "input": "x", "truncation": 1}, "truncation"),
    ({"model": 5, "input": "x"}, "model"),
    ({"model": "m", "input": {"role": "user"}}, "input"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name"),
    ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "m", "input": "x", "surprise": 1}, "surprise"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param"), WRONG_TYPES)
async def test_wrong_types_are_400s_naming_the_parameter(
    served: Server, http: httpx.AsyncClient, tmp_path: Path, body: Any, param: str
) -> None:
    refused(await http.post("/v1/responses", json=body), param=param)
    assert_nothing_half_done(served, tmp_path / "hostile.db")


RAW_BODIES = [
    (b'{"model": "m", "input": "x", "temperature": NaN}', None),
    (b'{"model": "m", "input": "x", "temperature": Infinity}', None),
    (b'{"model": "m", "input": "x", "temperature": -Infinity}', None),
    (b'{"model": "m", "input": "x", "temperature": 1e400}', None),
    (b'{"model": "m", "input": "x", "max_output_tokens": 1234567890123456789012345678901}', None),
    (b'{"model": "m", "input": "x", "max_output_tokens": 9223372036854775808}',
     "max_output_tokens"),
    (b'{"model": "m", "input": "x", "seed": ' + b"9" * 5000 + b"}", None),
    (b'{"model": "m\\ud800", "input": "x"}', "model"),
    (b'{"model": "m", "input": "x\\udfff"}', "input"),
    (b'{"model": "m", "input": [{"role": "user", "content": "\\ud800"}]}', "input[0].content"),
    (b'{"model": "m", "input": "x", "metadata": {"\\ud800": "v"}}', "metadata"),
    (b"[" * 10_000 + b"]" * 10_000, None),
    (b'{"model": "m", "input": ' + b"[" * 100 + b"]" * 100 + b"}", None),
    (b"{not json", None),
    (b"\xff\xfe{}", None),
    (b"", None),
    (b"[]", None),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "param"), RAW_BODIES)
async def test_values_no_response_could_carry_are_refused_before_anything_is_kept(
    served: Server, http: httpx.AsyncClient, tmp_path: Path, raw: bytes, param: str | None
) -> None:
    answer = await http.post(
        "/v1/responses", content=raw, headers={"content-type": "application/json"}
    )
    refused(answer, param=param)
    assert_nothing_half_done(served, tmp_path / "hostile.db")


async def test_urls_other_than_https_http_and_data_are_refused(
    served: Server, http: httpx.AsyncClient, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    for url in ("file:///etc/passwd", "gopher://x", "/etc/passwd", "ftp://x/y"):
        for part in (
            {"type": "input_file", "file_url": url},
            {"type": "input_image", "image_url": url},
        ):
            body = {"model": "m", "input": [{"role": "user", "content": [part]}]}
            field = "file_url" if part["type"] == "input_file" else "image_url"
            refused(
                await http.post("/v1/responses", json=body), param=f"input[0].content[0].{field}"
            )
    assert upstream.requests == []
    assert_nothing_half_done(served, tmp_path / "hostile.db")


async def test_query_parameters_out_of_range_are_400s_before_any_stream(
    served: Server, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    created = (await http.post("/v1/responses", json={"model": "m", "input": "x"})).json()
    path = f"/v1/responses/{created['id']}"
    for after in ("99999999999999999999", "-2", "x", "1e3", "", "٣"):
        answer = await http.get(path, params={"stream": "true", "starting_after": after})
        refused(answer, param="starting_after")
    for limit in ("0", "101", "x", "99999999999999999999999"):
        refused(await http.get(f"{path}/input_items", params={"limit": limit}), param="limit")
    refused(await http.get(f"{path}/input_items", params={"order": "up"}), param="order")
    assert_nothing_half_done(served, tmp_path / "hostile.db")


ROUTES = {
    "/v1/responses": {"POST"},
    # Also a response's path, whose id would be "input_tokens".
    "/v1/responses/input_tokens": {"POST", "GET", "HEAD", "DELETE"},
    "/v1/responses/compact": {"POST", "GET", "HEAD", "DELETE"},
    "/v1/responses/resp_x": {"GET", "HEAD", "DELETE"},
    "/v1/responses/resp_x/cancel": {"POST"},
    "/v1/responses/resp_x/input_items": {"GET", "HEAD"},
    "/v1/responses/resp_x/steps": {"GET", "HEAD"},
    "/v1/conversations": {"POST"},
    "/v1/conversations/conv_x": {"GET", "HEAD", "POST", "DELETE"},
    "/v1/conversations/conv_x/items": {"GET", "HEAD", "POST"},
    "/v1/conversations/conv_x/items/msg_x": {"GET", "HEAD", "DELETE"},
    "/healthz": {"GET", "HEAD"},
    "/metrics": {"GET", "HEAD"},
}


async def test_every_route_and_method_answers_in_openai_s_shape(http: httpx.AsyncClient) -> None:
    for path, allowed in ROUTES.items():
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method in allowed:
                continue
            error = refused(await http.request(method, path), 405)
            assert method in error["message"]
            answer = await http.request(method, path)
            assert set(answer.headers["allow"].split(", ")) == allowed | {"OPTIONS"}
        options = await http.options(path)
        assert options.status_code == 204
        assert set(options.headers["allow"].split(", ")) == allowed | {"OPTIONS"}
        if "HEAD" in allowed:
            head = await http.head(path)
            assert head.status_code in (200, 404) and head.content == b""
    for path in ("/v1/nothing", "/v1/responses/", "/v1/responses/resp_x/"):
        answer = await http.get(path, headers={"host": "evil.example"})
        refused(answer, 404)
        assert "location" not in answer.headers


async def test_idempotency_keys_as_stripe_does_them(
    served: Server, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    body = {"model": "m", "input": "once", "background": True}
    headers = {"idempotency-key": "race-1"}
    answers = await asyncio.gather(
        *(http.post("/v1/responses", json=body, headers=headers) for _ in range(20))
    )
    ids = set()
    for answer in answers:
        if answer.status_code == 409:
            assert refused(answer, 409)["code"] == "idempotency_key_in_use"
            continue
        assert answer.status_code == 200, answer.text
        assert answer.json() is not None
        ids.add(answer.json()["id"])
    assert len(ids) == 1
    other = {**body, "input": "something else"}
    error = refused(await http.post("/v1/responses", json=other, headers=headers), 400)
    assert error["code"] == "idempotency_key_reused"
    [response_id] = ids
    async with http.stream(
        "GET", f"/v1/responses/{response_id}", params={"stream": "true"}
    ) as stream:
        async for _ in stream.aiter_lines():
            pass
    assert_nothing_half_done(served, tmp_path / "hostile.db")


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    # A bound on the wait, not the synchronisation: the server closes first.
    sock.settimeout(20)
    return sock


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


async def test_slow_and_broken_clients_are_dropped_without_harm(
    served: Server, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Headers never finished: the connection is closed, with nothing sent.
    stalled = connect(served.url)
    stalled.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Le")
    assert await asyncio.to_thread(read_all, stalled) == b""
    # A body that stops arriving: a 408, then the connection closes.
    slow = connect(served.url)
    slow.sendall(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alpha\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":'
    )
    answer = await asyncio.to_thread(read_all, slow)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request_timeout" in answer
    # A body cut short by a client that leaves.
    cut = connect(served.url)
    cut.sendall(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-alpha\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":'
    )
    cut.close()
    # Others were served all along.
    assert (await http.get("/healthz")).status_code == 200
    ok = await http.post("/v1/responses", json={"model": "m", "input": "x"})
    assert ok.json()["status"] == "completed"
    assert_nothing_half_done(served, tmp_path / "hostile.db")


async def test_the_bearer_scheme_is_case_insensitive(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "input": "x"}
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"authorization": f"{scheme} sk-beta"}
        assert (await http.post("/v1/responses", json=body, headers=headers)).status_code == 200
    for header in ("Basic sk-beta", "Bearer", "bearer sk-gamma", "sk-beta"):
        answer = await http.post("/v1/responses", json=body, headers={"authorization": header})
        assert answer.status_code == 401


async def test_sigterm_exits_zero_after_a_clean_stop(
    served: Server, http: httpx.AsyncClient
) -> None:
    # Answered, so the server has installed its signal handlers.
    assert (await http.get("/healthz")).status_code == 200
    served.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(served.process.wait, 30) == 0
    assert "Traceback" not in served.log.read_text()


async def test_a_failed_model_call_shows_no_upstream_internals(
    http: httpx.AsyncClient, upstream: ScriptedUpstream, tmp_path: Path, served: Server
) -> None:
    upstream.handler = lambda r: JsonReply({"error": {"message": "overloaded"}}, 503)
    answer = (await http.post("/v1/responses", json={"model": "m", "input": "x"})).json()
    assert answer["status"] == "failed"
    assert answer["error"]["code"] == "upstream_error"
    assert answer["error"]["message"] == (
        "The model call failed: the upstream answered 503. It said: overloaded"
    )
    steps = (await http.get(f"/v1/responses/{answer['id']}/steps")).json()["data"]
    assert json.dumps(steps).count(upstream.endpoint) == 0
    assert_nothing_half_done(served, tmp_path / "hostile.db")


class FailingLater(MemoryStore):
    """A store whose step writes fail once the response runs, as a store that
    cannot encode what it is handed would."""

    async def complete_step(self, step_id: str, payload: Any, *, fence: int | None = None) -> None:
        raise TypeError("Object of type bytes is not JSON serializable")


async def test_accepted_means_it_ends(upstream: ScriptedUpstream) -> None:
    """Whatever fails after a request is accepted ends the response `failed`
    with a message for the client; nothing stays in progress."""
    store = FailingLater()
    responses = Responses(store, HttpTools([]), UpstreamTarget(upstream.endpoint))
    response = await responses.create({"model": "m", "input": "x"}, request_id="r1")
    assert response["status"] == "failed"
    assert response["error"] == {
        "code": "store_error",
        "message": "The response could not be stored.",
    }
    assert await store.outcome("r1") == ("failed", response)
