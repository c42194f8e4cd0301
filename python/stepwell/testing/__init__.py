"""Helpers for testing code built on stepwell: a recording sink, a scripted
transition, and a scripted chat-completions upstream on loopback."""

from .._core import CountingSink
from .sink import RecordingSink
from .transition import ScriptedTransition
from .upstream import (
    JsonReply,
    ScriptedUpstream,
    StreamReply,
    UpstreamRequest,
    chat_completion,
    text_chunks,
    tool_call_chunks,
)

__all__ = [
    "CountingSink",
    "JsonReply",
    "RecordingSink",
    "ScriptedTransition",
    "ScriptedUpstream",
    "StreamReply",
    "UpstreamRequest",
    "chat_completion",
    "text_chunks",
    "tool_call_chunks",
]
