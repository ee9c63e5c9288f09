"""The small demo checkpoints shipped inside the package, each with a model card (``<name>.md``).

File names are ``demo-<method>.safetensors`` (method as in ``propose.registry.METHODS``); ``training/demo-*.yaml``
regenerates them. Only paths are handled here (no torch), so the widgets can list them.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent


def bundled_checkpoints() -> dict[str, Path]:
    """Method -> bundled demo checkpoint, for the methods that have one in this install."""
    return {p.stem.removeprefix("demo-"): p for p in sorted(WEIGHTS_DIR.glob("demo-*.safetensors"))}


def bundled(method: str) -> Path | None:
    """The bundled demo checkpoint of ``method``, or None when this install ships none."""
    return bundled_checkpoints().get(method)


def model_card(checkpoint: Path) -> Path | None:
    """The model card (``.md`` beside the checkpoint), or None."""
    card = Path(checkpoint).with_suffix(".md")
    return card if card.is_file() else None
