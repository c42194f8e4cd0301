"""Conversations through the official `openai` client against `stepwell serve`:
items kept across responses, per tenant, in OpenAI's shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import BadRequestError, NotFoundError
from stepwell.testing import JsonReply, ScriptedUpstream, UpstreamRequest, chat_completion

from .test_server import PIECES, Server, model


@pytest.fixture
def upstream() -> Any:
    with ScriptedUpstream(model) as server:
        yield server


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


async def test_a_conversation_over_three_turns(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    """Each turn starts from the conversation's items and adds its input and
    output; the third model call sees all of it."""
    server = Server(upstream.endpoint, tmp_path / "c.db")
    try:
        client = server.client()
        conversation = await client.conversations.create(
            items=[{"type": "message", "role": "user", "content": "My name is Ada."}],
            metadata={"topic": "names"},
        )
        assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "names"}
        first = await client.responses.create(
            model="m", input="What is my name?", conversation=conversation.id
        )
        assert first.status == "completed"
        second = await client.responses.create(
            model="m", input="And again?", conversation={"id": conversation.id}
        )
        assert second.output_text == "".join(PIECES)
        async with client.responses.stream(
            model="m", input="Once more.", conversation=conversation.id
        ) as stream:
            third = await stream.get_final_response()
        assert third.status == "completed"
        sent = upstream.requests[-1].body["messages"]
        answer = "".join(PIECES)
        assert [(m["role"], text_of(m)) for m in sent] == [
            ("user", "My name is Ada."),
            ("user", "What is my name?"),
            ("assistant", answer),
            ("user", "And again?"),
            ("assistant", answer),
            ("user", "Once more."),
        ]
        listed = await client.conversations.items.list(conversation.id, order="asc")
        kept = [i.to_dict() for i in listed.data]
        assert [(i["role"], text_of(i)) for i in kept] == [
            *[(m["role"], text_of(m)) for m in sent],
            ("assistant", answer),
        ]
        assert listed.has_more is False and listed.first_id == kept[0]["id"]
        # The response's own item ids: its output message is the same item.
        assert kept[-1]["id"] == third.output[0].id
        newest = await client.conversations.items.list(conversation.id, limit=2)
        assert [i.id for i in newest.data] == [kept[-1]["id"], kept[-2]["id"]]
        assert newest.has_more is True

        added = await client.conversations.items.create(
            conversation.id, items=[{"type": "message", "role": "user", "content": "A note."}]
        )
        [note] = added.data
        found = await client.conversations.items.retrieve(note.id, conversation_id=conversation.id)
        assert found.to_dict()["content"] == [{"type": "input_text", "text": "A note."}]
        after = await client.conversations.items.delete(note.id, conversation_id=conversation.id)
        assert after.id == conversation.id
        with pytest.raises(NotFoundError):
            await client.conversations.items.retrieve(note.id, conversation_id=conversation.id)
        updated = await client.conversations.update(conversation.id, metadata={"topic": "Ada"})
        assert updated.metadata == {"topic": "Ada"}
        assert (await client.conversations.retrieve(conversation.id)).metadata == {"topic": "Ada"}

        with pytest.raises(BadRequestError) as refused:
            await client.responses.create(
                model="m", input="x", conversation=conversation.id, previous_response_id=first.id
            )
        assert refused.value.param == "conversation"
        with pytest.raises(NotFoundError):
            await client.responses.create(model="m", input="x", conversation="conv_unknown")
        with pytest.raises(BadRequestError) as refused:
            await client.conversations.items.create(
                conversation.id, items=[{"type": "message", "role": "robot", "content": "x"}]
            )
        assert refused.value.param is not None and refused.value.param.startswith("items[0]")
        with pytest.raises(BadRequestError):
            await client.conversations.items.create(
                conversation.id, items=[{"type": "message", "role": "user", "content": "x"}] * 21
            )

        deleted = await client.conversations.delete(conversation.id)
        assert deleted.deleted is True
        with pytest.raises(NotFoundError):
            await client.conversations.retrieve(conversation.id)
    finally:
        server.stop()


async def test_another_tenant_s_conversation_is_not_found(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"sk-acme" = "acme"\n"sk-globex" = "globex"\n')
    server = Server(upstream.endpoint, tmp_path / "t.db", "--keys", str(keys))
    try:
        acme, globex = server.client("sk-acme"), server.client("sk-globex")
        conversation = await acme.conversations.create()
        with pytest.raises(NotFoundError):
            await globex.conversations.retrieve(conversation.id)
        with pytest.raises(NotFoundError):
            await globex.conversations.items.list(conversation.id)
        with pytest.raises(NotFoundError):
            await globex.responses.create(model="m", input="x", conversation=conversation.id)
        assert (await acme.conversations.retrieve(conversation.id)).id == conversation.id
    finally:
        server.stop()


def client_tool_model(request: UpstreamRequest) -> Any:
    """Calls the client's `weather` tool, then answers from its result."""
    last = request.body["messages"][-1]
    if last["role"] == "tool":
        return JsonReply(chat_completion(f"It is {last['content']}."))
    call = {"id": "call_w", "name": "weather", "arguments": '{"city": "Oslo"}'}
    return JsonReply(chat_completion(tool_calls=[call]))


async def test_a_client_side_tool_round_trip_within_a_conversation(tmp_path: Path) -> None:
    """As the Agents SDK runs with a `conversation_id`: each turn sends only
    its new items (the second, the tool's output), and the model gets the
    user's message and its own call before the tool's result."""
    with ScriptedUpstream(client_tool_model) as upstream:
        server = Server(upstream.endpoint, tmp_path / "a.db")
        try:
            client = server.client()
            conversation = await client.conversations.create()
            tool = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
            first = await client.responses.create(
                model="m", input="Weather in Oslo?", tools=[tool], conversation=conversation.id
            )
            [call] = first.output
            assert call.type == "function_call" and call.call_id == "call_w"
            second = await client.responses.create(
                model="m",
                input=[{"type": "function_call_output", "call_id": "call_w", "output": "sunny"}],
                tools=[tool],
                conversation=conversation.id,
            )
            assert second.output_text == "It is sunny."
            sent = upstream.requests[-1].body["messages"]
            assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
            assert sent[1]["tool_calls"][0]["id"] == "call_w"
            assert sent[2]["tool_call_id"] == "call_w"
            listed = await client.conversations.items.list(conversation.id, order="asc")
            assert [i.type for i in listed.data] == [
                "message", "function_call", "function_call_output", "message"
            ]  # fmt: skip
        finally:
            server.stop()
