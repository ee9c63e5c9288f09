"""Evaluation: segmentation metrics (IoU/DSC pooled and per image, area ratios, DFP's DSC/TPVF/PPV), image-level
classification metrics (Acc/F1/AUC), the background-threshold sweep, and report writers. numpy/scipy/matplotlib only.

See docs/evaluation.md for every definition and the ``oct-wsss evaluate`` JSON schema.
"""

from oct_wsss.evaluate.classification import classification_scores, f1_score, presence_from_labels, roc_auc
from oct_wsss.evaluate.metrics import (
    BinaryScores,
    ClassScores,
    SegmentationScores,
    binary_scores,
    binary_volume_scores,
    confusion_matrix,
    confusion_per_image,
    evaluate_labels,
    image_confusions,
    mean_sd,
    restrict,
    segmentation_scores,
    summarise_volumes,
)
from oct_wsss.evaluate.paths import EvaluationInputError, apply_truth_map, evaluate_paths, parse_truth_map
from oct_wsss.evaluate.report import console_table, markdown_table, write_json, write_markdown
from oct_wsss.evaluate.sweep import SweepResult, plot_sweep, sweep_threshold, write_sweep_csv

__all__ = [
    "BinaryScores", "ClassScores", "EvaluationInputError", "SegmentationScores", "SweepResult", "apply_truth_map",
    "binary_scores", "binary_volume_scores", "classification_scores", "confusion_matrix", "confusion_per_image",
    "console_table", "evaluate_labels", "evaluate_paths", "f1_score", "image_confusions", "markdown_table", "mean_sd",
    "parse_truth_map", "plot_sweep", "presence_from_labels", "restrict", "roc_auc", "segmentation_scores",
    "summarise_volumes", "sweep_threshold", "write_json", "write_markdown", "write_sweep_csv",
]
