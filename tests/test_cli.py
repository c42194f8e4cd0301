"""The `stepwell` command: `demo` with nothing to configure, and `run` against a
real OpenAI-compatible server on loopback, with HTTP tools and a SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stepwell.stores import SQLiteStore
from stepwell.testing import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    text_chunks,
    tool_call_chunks,
)

STEPWELL = [sys.executable, "-m", "stepwell.cli"]


def test_demo_runs_a_two_round_tool_using_response() -> None:
    run = subprocess.run([*STEPWELL, "demo"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert '→ get_weather({"city": "Paris"})' in out
    assert '← {"city":"Lima","sky":"overcast","temp_c":14}' in out
    assert "Paris: 14°C, overcast. Lima: 14°C, overcast." in out
    assert "[completed] resp_" in out


async def test_run_against_a_server_with_http_tools_and_sqlite(tmp_path: Path) -> None:
    def server(request: UpstreamRequest) -> object:
        if request.path == "/tools/time":
            return JsonReply({"time": "12:00", "zone": request.body["zone"]})
        messages = request.body["messages"]
        if messages[-1]["role"] == "tool":
            answer = json.loads(messages[-1]["content"])["time"]
            return StreamReply(text_chunks(["It is ", answer, "."]))
        call = {"id": "call_t", "name": "time", "arguments": '{"zone": "UTC"}'}
        return StreamReply(tool_call_chunks([call]))

    with ScriptedUpstream(server) as upstream:
        tools = tmp_path / "tools.toml"
        url = f"{upstream.endpoint}/tools/time"
        tools.write_text(f'[[tool]]\nname = "time"\ndescription = "The time."\nurl = "{url}"\n')
        db = tmp_path / "cli.db"
        env = {**os.environ, "MY_KEY": "sk-cli-test"}
        run = subprocess.run(
            [
                *STEPWELL,
                "run",
                "what time is it?",
                "--base-url",
                f"{upstream.endpoint}/v1",
                "--model",
                "m",
                "--api-key-env",
                "MY_KEY",
                "--tools",
                str(tools),
                "--store",
                f"sqlite:{db}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        chat = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert run.returncode == 0, run.stderr
    assert '→ time({"zone": "UTC"})' in run.stdout
    assert "It is 12:00." in run.stdout
    assert [r.headers["authorization"] for r in chat] == ["Bearer sk-cli-test"] * 2
    assert chat[0].body["tools"][0]["function"]["name"] == "time"
    # The response is on disk, with its three steps.
    store = SQLiteStore(db)
    response_id = run.stdout.split("[completed] ")[1].split()[0]
    assert len(await store.steps(response_id.removeprefix("resp_"))) == 3
    assert "sk-cli-test" not in run.stdout + run.stderr


def test_run_without_the_key_variable_fails_clearly() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ABSENT_KEY"}
    run = subprocess.run(
        [
            *STEPWELL,
            "run",
            "q",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--api-key-env",
            "ABSENT_KEY",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert run.returncode != 0
    assert "$ABSENT_KEY is not set" in run.stderr
