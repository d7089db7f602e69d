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


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = ["sabma", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """Module → the sabma modules it imports (module level or inside functions). ``from
    sabma.a import b`` points at the module ``sabma.a.b`` when there is one, else at
    ``sabma.a`` (a name defined there)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def import_cycles() -> list[list[str]]:
    """The import cycles among sabma's modules (strongly connected components of more than one
    module, Tarjan's algorithm), each sorted."""
    graph = _module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_no_import_cycle_between_modules() -> None:
    assert import_cycles() == []


def test_the_check_sees_a_cycle_inside_a_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted cycle inside one package, held together by a function-level import."""
    fake = tmp_path / "sabma"
    (fake / "pipeline").mkdir(parents=True)
    (fake / "pipeline" / "__init__.py").write_text("")
    (fake / "pipeline" / "a.py").write_text("from sabma.pipeline.b import g\n")
    (fake / "pipeline" / "b.py").write_text("def g():\n    from sabma.pipeline import a\n")
    monkeypatch.setattr(f"{__name__}.SRC", fake)
    assert import_cycles() == [["sabma.pipeline.a", "sabma.pipeline.b"]]
