"""Writing evaluation reports: strict JSON (undefined values as ``null``), a console table, a Table-1 markdown."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.classes import ONTOLOGY

_NAMES = {c.key: c for c in ONTOLOGY}


def jsonable(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python values and NaN/±inf into ``None``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write ``report`` as strict JSON (``allow_nan=False``: no NaN/Infinity tokens ever reach the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _shown(report: dict[str, Any]) -> list[str]:
    """Classes worth a row: background plus every class present in truth or prediction."""
    return [k for k, c in report["classes"].items()
            if k == "background" or c["truth_pixels"] > 0 or c["pred_pixels"] > 0]


def fluid_note(report: dict[str, Any]) -> str | None:
    """The line saying fluid (7) was scored against SRF ∪ IRF truth, or None when it was scored id against id."""
    if not report.get("fluid_scored_against"):
        return None
    return ("fluid (7, \"SRF or IRF\") was predicted but the truth tells SRF from IRF: fluid is scored against the "
            "union of SRF and IRF truth (SRF and IRF folded into fluid in truth and prediction)")


def console_table(report: dict[str, Any]) -> str:
    """Short fixed-width table for stdout (percentages; '–' = undefined)."""
    head = f"{'class':<11}{'IoU':>9}{'DSC pool':>10}{'DSC img':>10}{'under':>8}{'over':>8}"
    lines = [head, "-" * len(head)]
    for k in _shown(report):
        c = report["classes"][k]
        lines.append(f"{k:<11}{_pct(c['iou']):>9}{_pct(c['dice_pooled']):>10}{_pct(c['dice_per_image']):>10}"
                     f"{_num(c['under_ratio']):>8}{_num(c['over_ratio']):>8}")
    lines.append("-" * len(head))
    lines.append(f"mIoU {_pct(report['miou'])}  mIoU w/o bg {_pct(report['miou_lesions'])}  "
                 f"DSC/img {_pct(report['dice_per_image_mean'])}  "
                 f"({report['n_images_scored']} of {report['n_images']} B-scans scored)")
    summary = report.get("volume_summary")
    if summary and summary["dsc"]["n"]:
        def ms(m: str) -> str:
            s = summary[m]
            return "–" if s["mean"] is None else f"{s['mean']:.3f}" + ("" if s["sd"] is None else f" ± {s['sd']:.3f}")
        lines.append(f"lesion vs bg per volume (n={summary['dsc']['n']}): DSC {ms('dsc')}  TPVF {ms('tpvf')}  "
                     f"PPV {ms('ppv')}")
    note = fluid_note(report)
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def markdown_table(report: dict[str, Any], title: str | None = None) -> str:
    """The AGM paper's Table-1 shape: one row per class, then Overall (w/o bg) and Overall; plus area ratios."""
    out = [f"### {title}", ""] if title else []
    out += ["| class | DSC (per image) | DSC (pooled) | IoU (pooled) | IoU (per image) | under FN/TP | over FP/TP |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for k in _shown(report):
        c = report["classes"][k]
        label = "BG" if k == "background" else k.upper()
        out.append(f"| {label} | {_pct(c['dice_per_image'])} | {_pct(c['dice_pooled'])} | {_pct(c['iou'])} | "
                   f"{_pct(c['iou_per_image'])} | {_num(c['under_ratio'])} | {_num(c['over_ratio'])} |")
    avg = report["averaged_classes"]
    les = [k for k in avg if k != "background"]

    def mean_of(field: str, keys: list[str]) -> float | None:
        vals = [report["classes"][k][field] for k in keys if report["classes"][k][field] is not None]
        return sum(vals) / len(vals) if vals else None

    for label, keys in (("Overall (w/o bg)", les), ("Overall", avg)):
        out.append(f"| **{label}** | {_pct(mean_of('dice_per_image', keys))} | {_pct(mean_of('dice_pooled', keys))} | "
                   f"{_pct(mean_of('iou', keys))} | {_pct(mean_of('iou_per_image', keys))} | | |")
    out += ["", f"Scored {report['n_images_scored']} of {report['n_images']} B-scans; overall rows average the "
                f"classes with ground-truth pixels ({', '.join(avg) or 'none'}). IoU (pooled) is the paper's per-class "
                "\"mIoU\"; DSC (per image) is its DSC. '–' = undefined (class absent, or TP = 0 for a ratio)."]
    note = fluid_note(report)
    if note:
        out += ["", f"Note: {note}."]
    summary = report.get("volume_summary")
    if summary and summary["dsc"]["n"]:
        out += ["", "| lesion vs background, per volume | mean | sd | n |", "|---|---:|---:|---:|"]
        for m, name in (("dsc", "DSC"), ("tpvf", "TPVF"), ("ppv", "PPV")):
            s = summary[m]
            out.append(f"| {name} | {_pct(s['mean'])} | {_pct(s['sd'])} | {s['n']} |")
    return "\n".join(out) + "\n"


def write_markdown(report: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write ``markdown_table(report)`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_table(jsonable(report), title))
    return path
