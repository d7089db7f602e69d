"""The package's layers: every import (module level or inside a function) points down or sideways
within its own package, never up, so there is no import cycle between packages.

The layer table is the one drawn in docs/architecture.md; a module that needs something from a
higher layer is in the wrong place (or the thing it needs is)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sabma"

#: bottom to top; a package may import from its own layer's packages only when listed in SIDEWAYS
LAYERS: list[tuple[str, ...]] = [
    ("config", "device", "distributed", "running_stats", "metrics"),
    ("posterior",),
    ("models",),
    ("data", "predict", "variance", "runs"),
    ("step", "shift", "ood"),
    ("__init__",),  # the public API: the posterior, the optimisers, the variance rule
    ("integrations",),  # Hugging Face Trainer, Lightning: on the public API
    ("methods",),
    ("priors",),
    ("training",),
    ("pipeline",),
    ("experiments", "sharpness", "examples"),
    ("cli",),
    ("__main__",),
]
#: same-layer imports that are allowed (importer, imported)
SIDEWAYS: set[tuple[str, str]] = set()


def _layer_of() -> dict[str, int]:
    return {package: i for i, layer in enumerate(LAYERS) for package in layer}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _is_package(name: str) -> bool:
    return (SRC / name / "__init__.py").is_file() or (SRC / f"{name}.py").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported sabma package, line) for every import statement in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "sabma":  # a subpackage, or a name of the package's __init__
                names = [
                    f"sabma.{a.name}" if _is_package(a.name) else "sabma.__init__"
                    for a in node.names
                ]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [(n.split(".")[1], node.lineno) for n in names if n.startswith("sabma.")]
    return found


def upward_imports() -> list[str]:
    layer = _layer_of()
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        here = _package(path)
        if here not in layer:
            bad.append(f"{path.relative_to(SRC)}: package {here!r} has no layer")
            continue
        for target, line in _imports(path):
            if target == here:
                continue
            if target not in layer:
                bad.append(f"{path.relative_to(SRC)}:{line} imports unknown package {target!r}")
            elif layer[target] > layer[here] or (
                layer[target] == layer[here] and (here, target) not in SIDEWAYS
            ):
                bad.append(f"{path.relative_to(SRC)}:{line}: {here} imports {target} (up)")
    return bad


def test_no_import_runs_up_the_layers() -> None:
    assert upward_imports() == []


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py")}
    assert packages <= set(_layer_of()), sorted(packages - set(_layer_of()))


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker itself: a function-level import from a higher layer is reported."""
    fake = tmp_path / "sabma"
    (fake / "posterior").mkdir(parents=True)
    (fake / "posterior" / "__init__.py").write_text("")
    (fake / "posterior" / "bad.py").write_text("def f():\n    from sabma.methods import x\n")
    monkeypatch.setattr(f"{__name__}.SRC", fake)
    assert upward_imports() == ["posterior/bad.py:2: posterior imports methods (up)"]
