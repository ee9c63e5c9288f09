"""Import an existing segmentation (labels.tif, a mask folder, .npy, eyepy .eye) as the proposal of the chosen
volume: the row under **Propose** in the Propose panel.

Thin: ``io.segmentation.read_segmentation`` reads and checks the file (what ``oct-wsss import`` runs); the row writes
the labels into the "lesions (proposed)" layer and records every B-scan as *proposed* with provenance "imported"
in the viewer's session, so the grader still accepts each B-scan in Review and the store records where it came
from. Accepted B-scans are kept as they are. A file that does not fit changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton
from napari.utils.notifications import show_error, show_info

from oct_wsss.io.segmentation import SegmentationError, imported_provenance, read_segmentation
from oct_wsss.napari._layers import PROPOSED, write_page


class ImportRow(Container):
    """A file picker and **Import as proposal**, acting on the Propose panel's image and proposal layer."""

    def __init__(self, panel: Any) -> None:
        self.file = FileEdit(label="segmentation", mode="r", filter="*.tif *.tiff *.npy *.eye",
                             tooltip="labels.tif, a .npy label array or an eyepy .eye file (ontology ids); type a "
                                     "folder of mask images")
        self.button = PushButton(text="Import as proposal")
        super().__init__(widgets=[self.file, self.button], labels=False, label="import")
        self.panel = panel
        self.button.changed.connect(self.run)

    def run(self, *_: Any) -> Any:
        """Import the chosen file into the proposal layer; returns the layer, or None (nothing changed)."""
        image, path = self.panel.image.value, Path(str(self.file.value or ""))
        if image is None or np.ndim(image.data) != 3:
            show_error("Import: open the OCT volume first; the segmentation is checked against it")
            return None
        try:
            labels = read_segmentation(path, tuple(image.data.shape))
        except SegmentationError as err:
            show_error(f"Import failed, nothing changed: {err}")
            return None
        layer = self.panel.proposed_layer(labels.shape, tuple(float(s) for s in image.scale[-3:]), PROPOSED)
        kept = import_labels(self.panel.session.records(layer), layer, labels, imported_provenance(path))
        self.panel.status.value = f"imported {labels.shape[0] - len(kept)} B-scans as proposed" + (
            f"; accepted B-scans {', '.join(map(str, kept))} kept" if kept else "")
        show_info(f"Import: {self.panel.status.value}; review and accept them in Review")
        return layer


def import_labels(records: Any, layer: Any, labels: np.ndarray, provenance: dict[str, Any]) -> list[int]:
    """Write ``labels`` into ``layer`` as proposed B-scans (session ``records``), skipping accepted ones, which are
    returned."""
    info = {**provenance, "source_tool": "napari"}
    kept = sorted(i for i in records.accepted if i < len(labels))
    for i, page in enumerate(labels):
        if i not in records.accepted:
            write_page(layer, i, page)
            records.propose(i, page, info)
    return kept
