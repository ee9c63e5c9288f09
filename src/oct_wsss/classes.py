"""The lesion ontology: one id, name, colour and set of producing methods per class.

Every mask the project reads, proposes, stores or exports uses these ids; datasets map their own
labels onto them and a checkpoint declares which of them it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    """One class of the ontology."""

    id: int
    key: str
    name: str
    colour: tuple[float, float, float, float]
    produced_by: tuple[str, ...]


BACKGROUND, SRF, IRF, PED, EZ, HRF, DRUSEN, FLUID = range(8)

ONTOLOGY: tuple[LesionClass, ...] = (
    LesionClass(0, "background", "background", (0.0, 0.0, 0.0, 0.0), ()),
    LesionClass(1, "srf", "SRF subretinal fluid", (0.90, 0.10, 0.10, 1.0), ("agm", "dfp", "student")),
    LesionClass(2, "irf", "IRF intraretinal fluid", (0.10, 0.80, 0.20, 1.0), ("agm", "dfp", "student")),
    LesionClass(3, "ped", "PED pigment epithelial detachment", (0.15, 0.35, 1.00, 1.0), ("agm", "student")),
    LesionClass(4, "ez", "EZ disruption", (1.00, 0.55, 0.00, 1.0), ("agm", "student")),
    LesionClass(5, "hrf", "HRF hyper-reflective foci", (1.00, 0.95, 0.10, 1.0), ("hrf", "agm", "student")),
    LesionClass(6, "drusen", "drusen", (0.65, 0.25, 0.85, 1.0), ("agm", "student")),
    LesionClass(7, "fluid", "fluid, type not distinguished", (0.00, 0.85, 0.90, 1.0), ("dfp", "student")),
)

LESION_IDS: tuple[int, ...] = tuple(c.id for c in ONTOLOGY if c.id != BACKGROUND)


def by_key(key: str) -> LesionClass:
    """Look a class up by its short key (``"srf"``, ``"hrf"``, ...)."""
    for c in ONTOLOGY:
        if c.key == key.lower():
            return c
    raise KeyError(f"unknown lesion class {key!r}; known: {', '.join(c.key for c in ONTOLOGY)}")


def colormap() -> dict[int | None, tuple[float, float, float, float]]:
    """Colours per id in the form napari's ``DirectLabelColormap`` takes (``None`` = any other id)."""
    colours: dict[int | None, tuple[float, float, float, float]] = {c.id: c.colour for c in ONTOLOGY}
    colours[None] = (0.5, 0.5, 0.5, 1.0)
    return colours
