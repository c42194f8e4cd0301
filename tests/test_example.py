"""The README's first command runs this example: it must complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def test_quickstart_prints_a_completed_response() -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "[response.completed]" in run.stdout
    assert "take a light jacket" in run.stdout
    assert "step 3: model_call completed" in run.stdout
