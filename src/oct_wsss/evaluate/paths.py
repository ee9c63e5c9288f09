"""Finding label volumes on disk (labels.tif, mask folders, synth volume folders, dataset roots) and scoring them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.evaluate.metrics import (
    BinaryScores,
    binary_scores,
    confusion_per_image,
    fluid_needs_union,
    fold_fluid,
    fold_fluid_classes,
    segmentation_scores,
    summarise_volumes,
)
from oct_wsss.io.folder import image_files


class EvaluationInputError(ValueError):
    """Inputs that cannot be scored (missing, unreadable, mismatched); the message is one line."""


def _single(path: Path) -> Path | None:
    """The labels file or mask folder a path stands for, or None when it is not a single volume."""
    if path.is_file():
        return path
    if (path / "labels.tif").is_file():
        return path / "labels.tif"
    if (path / "masks").is_dir():
        return path / "masks"
    if image_files(path):  # the same files read_labels would stack
        return path
    return None


def resolve(path: str | Path) -> dict[str, Path]:
    """``{volume_id: labels source}``: one entry for a labels.tif / mask folder / volume folder, else one per subfolder.

    A volume folder holds ``labels.tif`` (``oct-wsss propose --out``) or ``masks/`` (``oct-wsss synth``); a
    dataset root holds such folders, named by volume id.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise EvaluationInputError(f"{path}: no such file or folder")
    single = _single(path)
    if single is not None:
        return {"": single}
    found = {d.name: s for d in sorted(path.iterdir()) if d.is_dir() and (s := _single(d)) is not None}
    if not found:
        raise EvaluationInputError(f"{path}: no labels.tif, mask images, masks/ folder or volume folders in it")
    return found


def load(source: Path) -> np.ndarray:
    """Read one label volume with ``oct_wsss.io.read_labels``; failures become one-line EvaluationInputErrors."""
    from oct_wsss.io import read_labels

    try:
        return read_labels(source)
    except Exception as exc:  # tifffile/imageio raise many kinds
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise EvaluationInputError(msg if str(source) in msg else f"{source}: {msg}") from exc


def _ontology_id(text: str, item: str) -> int:
    """An ontology id from its number or key (``7`` or ``fluid``); EvaluationInputError naming ``item`` otherwise."""
    from oct_wsss.classes import ONTOLOGY, by_key

    known = ", ".join(f"{c.id} {c.key}" for c in ONTOLOGY)
    try:
        value = int(text) if text.lstrip("-").isdigit() else by_key(text).id
    except KeyError:
        value = -1
    if not 0 <= value < len(ONTOLOGY):
        raise EvaluationInputError(f"--truth-map {item}: {text!r} is not an ontology id (known: {known})")
    return value


def parse_truth_map(texts: Sequence[str] | None) -> dict[int, int] | None:
    """``["9:7", "3:ped,5:5"]`` -> ``{9: 7, 3: 3, 5: 5}``: truth label -> ontology id (number or key), repeatable
    and comma-separated; bad syntax, a non-ontology target or a label mapped twice is an EvaluationInputError."""
    if not texts:
        return None
    mapping: dict[int, int] = {}
    for item in (part.strip() for text in texts for part in text.split(",")):
        if not item:
            continue
        src, sep, dst = item.partition(":")
        if not sep or not src.strip().isdigit() or not dst.strip():
            raise EvaluationInputError(f"--truth-map takes SRC:DST pairs (a truth label, a non-negative integer, "
                                       f"and an ontology id or key), e.g. 9:7 or 9:fluid; got {item!r}")
        label, target = int(src), _ontology_id(dst.strip(), item)
        if label > 255:
            raise EvaluationInputError(f"--truth-map {item}: truth labels are read as 8-bit values (0..255)")
        if mapping.get(label, target) != target:
            raise EvaluationInputError(f"--truth-map maps truth label {label} twice ({mapping[label]} and {target})")
        mapping[label] = target
    return mapping or None


def apply_truth_map(labels: np.ndarray, mapping: dict[int, int]) -> tuple[np.ndarray, set[int]]:
    """Truth in another convention as ontology ids: mapped labels take their id, every other label becomes
    background; returns the mapped labels and the non-zero labels that became background (for the report)."""
    out = np.zeros(labels.shape, np.uint8)
    for label, target in mapping.items():
        out[labels == label] = target
    present = {int(v) for v in np.unique(labels)}
    return out, present - set(mapping) - {0}


def match(pred: dict[str, Path], truth: dict[str, Path]) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair prediction and truth volumes by id; returns the pairs and the truth ids with no prediction."""
    if set(pred) == {""} and set(truth) == {""}:
        return [("volume", pred[""], truth[""])], []
    if "" in pred or "" in truth:
        kind = lambda d: "a single volume" if "" in d else f"{len(d)} volume folders"  # noqa: E731
        raise EvaluationInputError(f"pred is {kind(pred)} but truth is {kind(truth)}; give two volumes or two roots")
    extra = sorted(set(pred) - set(truth))
    if extra:
        raise EvaluationInputError(f"{len(extra)} predicted volume(s) have no truth: {', '.join(extra[:5])}"
                                   + (" ..." if len(extra) > 5 else ""))
    return [(v, pred[v], truth[v]) for v in sorted(pred)], sorted(set(truth) - set(pred))


def evaluate_paths(pred: str | Path, truth: str | Path, classes: Sequence[int] | None = None, *,
                   lesion_images_only: bool = False, truth_map: dict[int, int] | None = None) -> dict[str, Any]:
    """Score a prediction against truth on disk; returns the JSON-ready report (schema in docs/evaluation.md).

    ``truth_map`` (``parse_truth_map``) reads truth in another label convention: mapped labels take their ontology
    id, every other label is background (e.g. ``{9: 7}`` for Duke, whose 1..8 are retinal layers).

    A prediction of undistinguished fluid (7) against truth that only tells SRF from IRF is scored against their
    union (SRF and IRF folded into fluid on both sides); the report's ``fluid_scored_against`` says so.
    """
    pairs, unmatched = match(resolve(pred), resolve(truth))
    cms: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    to_background: set[int] = set()
    for vid, p_src, t_src in pairs:
        p, t = load(p_src), load(t_src)
        if truth_map:
            t, dropped = apply_truth_map(t, truth_map)
            to_background |= dropped
        if p.shape != t.shape:
            where = "" if vid == "volume" else f" in volume {vid}"
            raise EvaluationInputError(f"shape mismatch{where}: pred {tuple(p.shape)} ({p_src}) vs truth "
                                       f"{tuple(t.shape)} ({t_src})")
        try:
            cms[vid] = confusion_per_image(t, p)
        except ValueError as exc:
            raise EvaluationInputError(f"{vid}: {exc}") from exc
        shapes[vid] = list(t.shape)
    union = fluid_needs_union(np.concatenate(list(cms.values())), classes)
    if union:
        cms = {vid: fold_fluid(cm) for vid, cm in cms.items()}
        classes = fold_fluid_classes(classes)
    volumes: dict[str, dict[str, Any]] = {}
    per_volume: dict[str, BinaryScores] = {}
    for vid, cm in cms.items():
        lesion_ids = [c for c in (classes if classes is not None else range(1, cm.shape[1])) if c != 0]
        per_volume[vid] = binary_scores(cm, lesion_ids)
        volumes[vid] = {"shape": shapes[vid], **per_volume[vid].to_dict()}
    scores = segmentation_scores(np.concatenate(list(cms.values())), classes, lesion_images_only=lesion_images_only)
    return {"schema": "oct-wsss-evaluate/1", "pred": str(pred), "truth": str(truth),
            "images_scored": "lesion images only" if lesion_images_only else "all",
            "fluid_scored_against": ["srf", "irf"] if union else None,
            "truth_map": {str(k): v for k, v in sorted(truth_map.items())} if truth_map else None,
            "truth_values_to_background": sorted(to_background) if truth_map else None,
            **scores.to_dict(), "volumes": volumes, "volume_summary": summarise_volumes(per_volume),
            "unmatched_truth_volumes": unmatched}
