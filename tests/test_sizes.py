"""The tree stays easy to read: no module over 300 lines, and no function over 80 lines in the
packages that orchestrate (``pipeline``, ``methods``), where long functions used to hide."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sabma"
MODULE_LINES = 300
FUNCTION_LINES = 80
SHORT_FUNCTIONS_IN = ("pipeline", "methods")


def long_modules(root: Path = SRC) -> list[str]:
    return [
        f"{path.relative_to(root)}: {n} lines"
        for path in sorted(root.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MODULE_LINES
    ]


def long_functions(root: Path = SRC) -> list[str]:
    found = []
    for package in SHORT_FUNCTIONS_IN:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > FUNCTION_LINES:
                        found.append(f"{path.relative_to(root)}:{node.name}: {lines} lines")
    return found


def test_no_module_is_over_300_lines() -> None:
    assert long_modules() == []


def test_no_function_in_pipeline_or_methods_is_over_80_lines() -> None:
    assert long_functions() == []


def test_the_checks_see_a_long_module_and_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "pipeline").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    (tmp_path / "pipeline" / "long.py").write_text(f"def f():\n{body}\n")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "big.py").write_text("x = 1\n" * (MODULE_LINES + 1))
    assert long_functions(tmp_path) == ["pipeline/long.py:f: 81 lines"]
    assert long_modules(tmp_path) == ["methods/big.py: 301 lines"]
