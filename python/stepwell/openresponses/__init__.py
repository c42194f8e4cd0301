"""Open Responses on top of the loop: the transition from a Responses request to
steps, the assembly of the `Response`, the spec's event stream (encoded in
Rust), and `Responses`, which runs requests over any store that keeps them."""

from .assemble import assemble, output_items, response_object, usage
from .compaction import CompactionFailed, CompactionKey
from .request import InvalidRequest, input_messages, model_request
from .service import Prepared, Responses
from .tokens import NoTokenizer, TokenCountFailed
from .transition import Agent, ResponsesTransition, stored
from .validation import parse_json, validate

__all__ = [
    "Agent",
    "CompactionFailed",
    "CompactionKey",
    "InvalidRequest",
    "NoTokenizer",
    "Prepared",
    "Responses",
    "ResponsesTransition",
    "TokenCountFailed",
    "assemble",
    "input_messages",
    "model_request",
    "output_items",
    "parse_json",
    "response_object",
    "stored",
    "usage",
    "validate",
]
