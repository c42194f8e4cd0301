"""The messages a response's model calls send before its own steps.

A response that continues another (`previous_response_id`) sends every
message the earlier one's last model call sent. Those are read from that
call's stored payload as JSON text and spliced into the next model call's
payload as text: a turn of a long conversation never decodes the
conversation into Python objects only to have it encoded again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .. import _core
from ..types import StepDescriptor, StepKind
from .request import JSONDict, model_request


@dataclass(frozen=True)
class ModelContext:
    """Messages in order: `leading`, then `carried` (the JSON text of
    messages carried from an earlier response: the inside of an array, empty
    for none), then `following`."""

    leading: list[JSONDict] = field(default_factory=list)
    carried: str = ""
    following: list[JSONDict] = field(default_factory=list)

    @classmethod
    def carried_from(cls, request_json: str) -> ModelContext:
        """The messages of the model request `request_json` (JSON text), less
        its system messages, kept as text."""
        return cls(carried=_core.carried_messages(request_json))

    def after(self, messages: list[JSONDict]) -> ModelContext:
        """`messages`, then these."""
        return ModelContext(messages + self.leading, self.carried, self.following)

    def then(self, messages: list[JSONDict]) -> ModelContext:
        """These messages, then `messages`."""
        return ModelContext(self.leading, self.carried, self.following + messages)

    def messages(self) -> list[JSONDict]:
        """Every message, decoded."""
        carried: list[JSONDict] = json.loads(f"[{self.carried}]") if self.carried else []
        return self.leading + carried + self.following

    def model_call(self, body: JSONDict, tools: list[JSONDict]) -> StepDescriptor:
        """The model call for `body` over these messages, with `tools`; what
        is carried stays text in its payload."""
        if not self.carried:
            return StepDescriptor.model_call(model_request(body, self.messages(), tools))
        texts = [json.dumps(m) for m in self.leading]
        texts.append(self.carried)
        texts += [json.dumps(m) for m in self.following]
        fields = []
        for name, value in model_request(body, [], tools).items():
            text = f"[{', '.join(texts)}]" if name == "messages" else json.dumps(value)
            fields.append(f"{json.dumps(name)}: {text}")
        encoded = "{" + ", ".join(fields) + "}"
        return StepDescriptor.with_encoded_request(encoded, kind=StepKind.MODEL_CALL)
