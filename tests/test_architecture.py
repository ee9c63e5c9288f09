"""The rooms of DESIGN.md, checked on the source: who may import whom, no cycles, no torch under napari/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "oct_wsss"
GROUND = {"volume", "classes", "checkpoint"}

#: room -> rooms (top-level modules/packages of oct_wsss) it may import.
ALLOWED: dict[str, set[str]] = {
    "volume": set(),
    "classes": set(),
    "checkpoint": {"classes"},
    "io": {"volume", "classes"},
    "synth": {"volume", "classes"},
    "models": set(),
    "explain": {"models"},
    "evaluate": {"classes", "io"},
    "propose": GROUND | {"models", "explain", "io"},
    "store": GROUND | {"io"},
    "training": GROUND | {"models", "explain", "io", "synth", "store", "evaluate", "propose"},
    "napari": GROUND | {"io", "synth", "propose", "store", "training", "evaluate", "weights"},
    "cli": GROUND | {"io", "synth", "propose", "store", "training", "evaluate", "weights"},
    "weights": set(),  # the bundled demo checkpoints: paths only (no torch), listed by the CLI and the widgets
}


def _room(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def _imports(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "oct_wsss" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_imports_only_what_its_room_may(path: Path) -> None:
    room = _room(path)
    assert room in ALLOWED, f"{room} is not a room of DESIGN.md; add it to ALLOWED with its rules"
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
