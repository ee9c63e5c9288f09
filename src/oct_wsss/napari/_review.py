"""The **Review** dock widget: accept or reject the current B-scan into a CorrectionStore project, move between
unreviewed B-scans, and restore accepted work when a volume is reopened.

The grader edits with napari's own label tools; Accept writes the B-scan's mask (with its pixels and the proposal it
started from) through ``CorrectionStore.accept`` — the same call a script makes. Accepted B-scans are listed in the
reviewed layer's metadata (``oct_wsss_accepted``), which the Propose widget reads so it never overwrites them.
Shortcuts: Shift-A accept, Shift-R reject, Shift-N next unreviewed, Shift-P previous.
"""

from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import Container, FileEdit, Label, LineEdit, PushButton, create_widget
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSettings

from oct_wsss.napari._layers import ACCEPTED_KEY, PROPOSED_KEY
from oct_wsss.store import ACCEPTED, REJECTED, CorrectionStore, StoreError
from oct_wsss.store.store import DB_FILE


class ReviewWidget(Container):
    """Dock widget holding a project folder, the grader's name and the per-B-scan review status."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.settings = QSettings("napari-oct-wsss", "review")
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="lesion labels")
        self.project = FileEdit(label="project", mode="d", value=self.settings.value("project", "") or "")
        self.grader = LineEdit(label="grader", value=self.settings.value("grader", "") or "")
        self.open_button = PushButton(text="Open project / restore")
        buttons = [PushButton(text=t) for t in ("Accept (⇧A)", "Reject (⇧R)", "Next unreviewed (⇧N)",
                                                "Previous (⇧P)")]
        self.status = Label(value="no project open")
        self.extend([self.image, self.labels, self.project, self.grader, self.open_button, *buttons, self.status])
        self.store: CorrectionStore | None = None
        self.volume_id = ""
        self.decisions: dict[int, str] = {}
        self.open_button.changed.connect(self.open)
        for button, action in zip(buttons, (self.accept, self.reject, self.next_unreviewed, self.previous),
                                  strict=True):
            button.changed.connect(action)
        for key, action in (("Shift-A", self.accept), ("Shift-R", self.reject), ("Shift-N", self.next_unreviewed),
                            ("Shift-P", self.previous)):
            viewer.bind_key(key, lambda _v, a=action: a(), overwrite=True)
        for widget in (self.image, self.labels):
            viewer.layers.events.inserted.connect(widget.reset_choices)
            viewer.layers.events.removed.connect(widget.reset_choices)

    @property
    def current(self) -> int:
        return int(self.viewer.dims.current_step[0])

    def open(self, *_: Any) -> bool:
        """Open the project for the chosen image and put its accepted B-scans back into the labels layer."""
        image, labels = self.image.value, self.labels.value
        if image is None or labels is None:
            show_error("Review: choose the OCT image and the lesion labels layer first (propose, or add Labels)")
            return False
        folder = Path(self.project.value)
        unset = str(self.project.value) in ("", ".") or (folder == Path.cwd() and not (folder / DB_FILE).exists())
        if unset or not folder.parent.exists():
            show_error("Review: choose a project folder for the corrections (a new or an existing project)")
            return False
        try:
            self.store = CorrectionStore(self.project.value)
        except StoreError as err:
            show_error(f"Review: {err}")
            return False
        self.settings.setValue("project", str(self.project.value))
        self.volume_id = self.store.volume_id(np.asarray(image.data))
        self.decisions = self.store.status(self.volume_id)
        for c in self.store.corrections(self.volume_id):
            if c.bscan < labels.data.shape[0]:
                labels.data[c.bscan] = c.arrays()["mask"]
        labels.refresh()
        labels.metadata[ACCEPTED_KEY] = {i for i, s in self.decisions.items() if s == ACCEPTED}
        self._show()
        return True

    def _ready(self) -> bool:
        return self.store is not None or self.open()

    def accept(self, *_: Any) -> None:
        """Store the current B-scan's labels as the grader's accepted correction."""
        if not self._ready():
            return
        i, labels, image = self.current, self.labels.value, self.image.value
        proposed = labels.metadata.get(PROPOSED_KEY, {}).get(i)
        self.settings.setValue("grader", self.grader.value)
        try:
            c = self.store.accept(self.volume_id, i, np.asarray(labels.data[i]), image=np.asarray(image.data[i]),
                                  proposal=proposed, proposal_info=labels.metadata.get("oct_wsss_provenance", {}),
                                  grader=self.grader.value)
        except (StoreError, ValueError) as err:
            show_error(f"Accept failed, nothing was recorded: {err}")
            return
        self.decisions[i] = ACCEPTED
        labels.metadata.setdefault(ACCEPTED_KEY, set()).add(i)
        show_info(f"B-scan {i} accepted (version {c.version})")
        self._show()

    def reject(self, *_: Any) -> None:
        """Record that the proposal of the current B-scan was rejected."""
        if not self._ready():
            return
        i = self.current
        self.store.reject(self.volume_id, i, grader=self.grader.value)
        self.decisions[i] = REJECTED
        self.labels.value.metadata.setdefault(ACCEPTED_KEY, set()).discard(i)
        self._show()

    def next_unreviewed(self, *_: Any) -> None:
        """Go to the next B-scan without a decision (wrapping round)."""
        n = self.viewer.dims.nsteps[0]
        for step in range(1, n + 1):
            j = (self.current + step) % n
            if j not in self.decisions:
                self.viewer.dims.set_current_step(0, j)
                return
        show_info("every B-scan has been reviewed")

    def previous(self, *_: Any) -> None:
        self.viewer.dims.set_current_step(0, max(0, self.current - 1))

    def _show(self) -> None:
        n = self.viewer.dims.nsteps[0]
        accepted = sum(s == ACCEPTED for s in self.decisions.values())
        rejected = sum(s == REJECTED for s in self.decisions.values())
        self.status.value = f"{accepted} accepted, {rejected} rejected, {n - accepted - rejected} unreviewed of {n}"
