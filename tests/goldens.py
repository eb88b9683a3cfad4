"""Golden scripts: the exact text a generator must produce (tests/golden/*.sh).

Rewrite them with UPDATE_GOLDEN=1 after an intended change, then review the diff.
"""

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} is missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file; rerun with UPDATE_GOLDEN=1 and review"
