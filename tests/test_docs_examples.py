"""Every Python block of README.md and docs/*.md runs, as written (no example can rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[tuple[str, int, str]]:
    """(file, line, code) of every fenced Python block."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            found.append((str(path.relative_to(ROOT)), line, match.group(1)))
    return found


def test_the_readme_has_the_drop_in_example() -> None:
    files = [f for f, _, code in python_blocks() if "sabma.SABMA(model" in code]
    assert "README.md" in files


@pytest.mark.parametrize(("file", "line", "code"), python_blocks(), ids=lambda v: str(v)[:20])
def test_block_runs(file: str, line: int, code: str) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(code, f"{file}:{line}", "exec"), namespace)
