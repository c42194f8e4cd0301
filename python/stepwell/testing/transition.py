"""``ScriptedTransition``: a transition function that plays back a script."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from ..types import ChainStep, Fail, NextAction

ScriptItem = NextAction | Callable[[list[ChainStep]], NextAction]
"""An action, or a function of the scope's chain that returns one."""


class ScriptedTransition:
    """Answers each scope's n-th ``next_action_for`` with the script's n-th item.

    The top-level scope plays ``top``; every sub-agent scope plays ``agent``
    from its start. Past the end of a script it answers ``Fail`` with type
    ``script_exhausted``. Use it as ``MemoryStore(ScriptedTransition([...]))``.
    """

    def __init__(self, top: Sequence[ScriptItem], agent: Sequence[ScriptItem] = ()) -> None:
        self.top = list(top)
        self.agent = list(agent)
        self.calls: defaultdict[tuple[str, str | None], int] = defaultdict(int)

    def __call__(
        self, chain: list[ChainStep], request_id: str, scope_parent: str | None
    ) -> NextAction:
        script = self.top if scope_parent is None else self.agent
        index = self.calls[(request_id, scope_parent)]
        self.calls[(request_id, scope_parent)] = index + 1
        if index >= len(script):
            return Fail({"type": "script_exhausted", "message": f"no action #{index + 1}"})
        item = script[index]
        return item(chain) if callable(item) else item
