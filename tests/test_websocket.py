"""WebSocket mode on `/v1/responses` against `stepwell serve`, with the
`websockets` package as the client: the same events as the SSE stream, one
response after another on a connection, and `store: false` continued from the
connection's own memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import websockets
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion

from .test_openresponses import RESPONSE
from .test_server import Server


def echo_model(request: UpstreamRequest) -> Any:
    """Answers with every user message so far, joined: what the model saw."""
    if request.body.get("stream"):
        from stepwell.testing import StreamReply, text_chunks

        said = " | ".join(m["content"] for m in request.body["messages"] if m["role"] == "user")
        if "fail" in said.split(" | ")[-1]:
            return JsonReply({"error": {"message": "overloaded"}}, 503)
        return StreamReply(text_chunks([said[: len(said) // 2], said[len(said) // 2 :]]))
    return JsonReply(chat_completion("unused"))


@pytest.fixture
def served(tmp_path: Path) -> Any:
    with ScriptedUpstream(echo_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "ws.db", "--websocket-max-age", "30")
        try:
            yield server
        finally:
            server.stop()


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://") + "/v1/responses"


async def turn(connection: Any, **body: Any) -> list[dict[str, Any]]:
    """Sends one `response.create` and reads its events to the terminal one
    (or an error)."""
    await connection.send(json.dumps({"type": "response.create", "model": "m", **body}))
    events = []
    while True:
        event = json.loads(await connection.recv())
        events.append(event)
        if event["type"] in ("response.completed", "response.failed", "response.incomplete"):
            return events
        if event["type"] == "error":
            return events


async def test_sequential_responses_on_one_connection(served: Server) -> None:
    async with websockets.connect(ws_url(served)) as connection:
        first = await turn(connection, input="one")
        second = await turn(connection, input="two")
    for events in (first, second):
        assert events[0]["type"] == "response.created"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        final = events[-1]["response"]
        assert final["status"] == "completed"
        assert list(RESPONSE.iter_errors(final)) == []
    assert second[-1]["response"]["output"][0]["content"][0]["text"] == "two"
    # The events are the SSE stream's, as that stream would replay them.
    response_id = first[-1]["response"]["id"]
    async with served.client() as client:
        retrieved = await client.responses.retrieve(response_id)
    assert retrieved.to_dict() == first[-1]["response"]


async def test_store_false_is_continued_on_its_connection_only(served: Server) -> None:
    async with websockets.connect(ws_url(served)) as connection:
        first = (await turn(connection, input="one", store=False))[-1]["response"]
        second = await turn(connection, input="two", store=False, previous_response_id=first["id"])
        # The model saw the first turn too: it was continued from memory.
        assert second[-1]["response"]["output"][0]["content"][0]["text"] == "one | two"
        # Not kept: HTTP does not find it.
        async with served.client() as client:
            with pytest.raises(Exception) as missing:
                await client.responses.retrieve(first["id"])
            assert getattr(missing.value, "status_code", None) == 404
    async with websockets.connect(ws_url(served)) as reconnected:
        [error] = await turn(reconnected, input="three", previous_response_id=first["id"])
    assert error["type"] == "error" and error["status"] == 400
    assert error["error"]["code"] == "previous_response_not_found"
    assert error["error"]["param"] == "previous_response_id"


async def test_a_failed_continuation_evicts_what_it_continued(served: Server) -> None:
    async with websockets.connect(ws_url(served)) as connection:
        first = (await turn(connection, input="one", store=False))[-1]["response"]
        failed = await turn(connection, input="fail", store=False, previous_response_id=first["id"])
        assert failed[-1]["type"] == "response.failed"
        [error] = await turn(connection, input="again", previous_response_id=first["id"])
        assert error["error"]["code"] == "previous_response_not_found"
        # The connection goes on.
        assert (await turn(connection, input="fresh"))[-1]["type"] == "response.completed"


async def test_bad_messages_get_error_events_and_the_connection_stays(served: Server) -> None:
    async with websockets.connect(ws_url(served)) as connection:
        await connection.send("{not json")
        assert json.loads(await connection.recv())["type"] == "error"
        [error] = await turn(connection, input="x", stream=True)
        assert error["status"] == 400 and error["error"]["param"] == "stream"
        [error] = await turn(connection, input="x", background=True)
        assert error["error"]["param"] == "background"
        [error] = await turn(connection, input=[{"type": "nope"}])
        assert error["status"] == 400 and error["error"]["param"] is not None
        await connection.send(json.dumps({"type": "session.update"}))
        assert json.loads(await connection.recv())["error"]["param"] == "type"
        assert (await turn(connection, input="fine"))[-1]["type"] == "response.completed"


async def test_a_connection_past_its_age_is_told_and_closed(tmp_path: Path) -> None:
    with ScriptedUpstream(echo_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "age.db", "--websocket-max-age", "0.5")
        try:
            async with websockets.connect(ws_url(server)) as connection:
                error = json.loads(await connection.recv())  # sent when the age is reached
                assert error["type"] == "error"
                assert error["error"]["code"] == "websocket_connection_limit_reached"
                with pytest.raises(websockets.ConnectionClosed):
                    await connection.recv()
        finally:
            server.stop()


async def test_the_handshake_needs_a_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"sk-acme" = "acme"\n')
    with ScriptedUpstream(echo_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "k.db", "--keys", str(keys))
        try:
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(ws_url(server)):
                    pass
            assert refused.value.response.status_code == 401
            headers = {"Authorization": "Bearer sk-acme"}
            async with websockets.connect(ws_url(server), additional_headers=headers) as ok:
                assert (await turn(ok, input="hi"))[-1]["type"] == "response.completed"
        finally:
            server.stop()
