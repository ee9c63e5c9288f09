"""The small checkpoints shipped inside the package, each with a model card (``<name>.md``).

``demo-<method>.safetensors`` (method as in ``propose.registry.METHODS``) are trained on the synthetic phantom
(``training/demo-*.yaml`` regenerates them); ``real-<method>.safetensors`` are trained for real B-scans (phantom plus
the shared real data's labels; ``training/real-*.yaml``). Only paths are handled here (no torch), so the widgets
can list them.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent
#: domain -> file-name prefix of its bundled checkpoints
DOMAINS = {"synthetic": "demo-", "real": "real-"}


def _listed(prefix: str) -> dict[str, Path]:
    return {p.stem.removeprefix(prefix): p for p in sorted(WEIGHTS_DIR.glob(f"{prefix}*.safetensors"))}


def bundled_checkpoints() -> dict[str, Path]:
    """Method -> bundled demo (phantom-trained) checkpoint, for the methods that have one in this install."""
    return _listed(DOMAINS["synthetic"])


def real_checkpoints() -> dict[str, Path]:
    """Method -> bundled checkpoint trained for real B-scans, for the methods that have one in this install."""
    return _listed(DOMAINS["real"])


def bundled(method: str, domain: str = "synthetic") -> Path | None:
    """The bundled checkpoint of ``method`` for ``domain`` ("synthetic": the demo one; "real"), or None."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return _listed(DOMAINS[domain]).get(method)


def offered(method: str, synthetic: bool) -> list[Path]:
    """The bundled checkpoints of ``method`` in the order to offer them: the real-data one first unless the image
    is synthetic (then the demo one first)."""
    order = ("synthetic", "real") if synthetic else ("real", "synthetic")
    return [p for p in (bundled(method, d) for d in order) if p is not None]


def model_card(checkpoint: Path) -> Path | None:
    """The model card (``.md`` beside the checkpoint), or None."""
    card = Path(checkpoint).with_suffix(".md")
    return card if card.is_file() else None


def layers_checkpoint() -> Path | None:
    """The bundled retinal layer checkpoint (``layers.safetensors``, trained on the shared Duke DME labels), or None."""
    path = WEIGHTS_DIR / "layers.safetensors"
    return path if path.is_file() else None
