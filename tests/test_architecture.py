"""The rooms of docs/architecture.md, checked on the source: who may import whom, no cycles, no torch under napari/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "oct_wsss"
GROUND = {"volume", "classes", "checkpoint"}

#: room -> rooms (top-level modules/packages of oct_wsss) it may import. docs/architecture.md says why.
ALLOWED: dict[str, set[str]] = {
    "volume": set(),
    "classes": set(),
    "checkpoint": {"classes"},
    "preprocess": set(),  # ground floor: what proposers and trainers both feed a network (numpy/scipy/torch only)
    "io": {"volume", "classes"},
    "synth": {"volume", "classes"},
    "models": set(),
    "explain": {"models"},
    "evaluate": {"classes", "io"},
    "propose": GROUND | {"preprocess", "models", "explain", "io"},
    "store": GROUND | {"io"},
    "training": GROUND | {"preprocess", "models", "explain", "io", "synth", "store", "evaluate", "propose"},
    "bench": GROUND | {"preprocess", "models", "explain", "io", "synth", "propose"},
    "napari": GROUND | {"io", "synth", "propose", "store", "training", "evaluate", "weights"},
    "cli": GROUND | {"preprocess", "io", "synth", "propose", "store", "training", "evaluate", "bench", "weights"},
    "weights": set(),  # the bundled demo checkpoints: paths only (no torch), listed by the CLI and the widgets
}


def _room(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _name(path: Path) -> str:
    """Dotted module name of a source file (a package's ``__init__.py`` is the package)."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALL = {_name(p): p for p in SRC.rglob("*.py")}


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (``None`` outside oct_wsss)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in ALL:
        parts.pop()
    return ".".join(parts) or None


def _targets(path: Path) -> set[str]:
    """Our modules that ``path`` imports anywhere in it (lazy imports inside functions too; relative ones resolved)."""
    name, out = _name(path), set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {_known(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            head = package[:len(package) - node.level + 1] if node.level else []
            base = ".".join([*head, *([node.module] if node.module else [])])
            out |= {_known(f"{base}.{a.name}") for a in node.names}
    return out - {None, name}


def _imports(path: Path) -> set[str]:
    """The rooms (second component of the module name) that ``path`` imports."""
    return {t.split(".")[1] for t in _targets(path) if t.count(".") >= 1}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan): each is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_imports_only_what_its_room_may(path: Path) -> None:
    room = _room(path)
    assert room in ALLOWED, f"{room} is not a room of docs/architecture.md; add it to ALLOWED with its rules"
    foreign = _imports(path) - {room} - ALLOWED[room]
    assert not foreign, f"{path.relative_to(SRC)} ({room}/) imports {sorted(foreign)}"


def test_nothing_imports_the_napari_package() -> None:
    """Only the manifest reaches oct_wsss.napari (the CLI's demo goes through napari's plugin API too)."""
    offenders = [p for p in MODULES if _room(p) != "napari" and "napari" in _imports(p)]
    assert not offenders


def test_napari_layer_imports_no_torch() -> None:
    code = (
        "import sys, oct_wsss.napari._reader, oct_wsss.napari._writer, oct_wsss.napari._widgets, "
        "oct_wsss.napari._sample_data, oct_wsss.napari._propose, oct_wsss.napari._review, oct_wsss.napari._quantify, "
        "oct_wsss.napari._finetune, oct_wsss.napari._sam2; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_room_rules_have_no_cycle() -> None:
    """The floors of docs/architecture.md: no room may, even indirectly, import a room that imports it."""
    assert not _cycles({room: rooms - {room} for room, rooms in ALLOWED.items()})


def test_no_module_import_cycle() -> None:
    """No two modules import each other, directly or round a loop, lazy imports included (cycles are bugs)."""
    assert not _cycles({name: _targets(path) for name, path in ALL.items()})


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
