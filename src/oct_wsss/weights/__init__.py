"""The small checkpoints shipped inside the package, each with a model card (``<name>.md``).

``demo-<method>.safetensors`` (method as in ``propose.registry.METHODS``) are trained on the synthetic phantom
(``training/demo-*.yaml`` regenerates them; demo-student is the phantom multi-class student of
``training/phantom-student.yaml``); ``real-<method>.safetensors`` are trained for real B-scans (phantom plus
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


#: real-data file stems that are not a method's name -> their method (``real-wsss``: the student trained with no real
#: pixel label, offered before ``real-student``, which learnt from real pixel labels)
REAL_VARIANTS = {"wsss": "student"}


def real_variants(method: str) -> list[Path]:
    """The bundled real-data checkpoints of ``method``, the weakly supervised variant first."""
    found = _listed(DOMAINS["real"])
    order = sorted(found, key=lambda stem: stem not in REAL_VARIANTS)
    return [found[stem] for stem in order if REAL_VARIANTS.get(stem, stem) == method]


def real_checkpoints() -> dict[str, Path]:
    """Method -> the first bundled checkpoint trained for real B-scans, for the methods that have one."""
    methods = {REAL_VARIANTS.get(stem, stem) for stem in _listed(DOMAINS["real"])}
    return {m: real_variants(m)[0] for m in sorted(methods)}


def bundled(method: str, domain: str = "synthetic") -> Path | None:
    """The bundled checkpoint of ``method`` for ``domain`` ("synthetic": the demo one; "real": the first real one),
    or None."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    return (real_checkpoints() if domain == "real" else _listed(DOMAINS[domain])).get(method)


def offered(method: str, synthetic: bool) -> list[Path]:
    """The bundled checkpoints of ``method`` in the order to offer them: the real-data ones first unless the image
    is synthetic (then the demo one first)."""
    demo = [p for p in (bundled(method),) if p is not None]
    return [*demo, *real_variants(method)] if synthetic else [*real_variants(method), *demo]


def model_card(checkpoint: Path) -> Path | None:
    """The model card (``.md`` beside the checkpoint), or None."""
    card = Path(checkpoint).with_suffix(".md")
    return card if card.is_file() else None


def layers_checkpoint() -> Path | None:
    """The bundled retinal layer checkpoint (``layers.safetensors``, trained on the shared Duke DME labels), or None."""
    path = WEIGHTS_DIR / "layers.safetensors"
    return path if path.is_file() else None
