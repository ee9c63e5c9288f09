"""The **Review** dock widget: accept or reject the current B-scan into a CorrectionStore project, move between
unreviewed B-scans, and restore accepted work when a volume is reopened.

The grader edits with napari's own label tools; Accept writes the B-scan's mask (with its pixels and the proposal it
started from) through ``CorrectionStore.accept`` — the same call a script makes. The project, the decisions and
the accepted B-scans live in the viewer's session (``_session``), which Propose and Propagate read so they never
overwrite accepted work. Undo and Redo move the current B-scan through its versions in the store
(``CorrectionStore.undo`` / ``redo``): the layer then shows the version in effect — an accepted or propagated
(proposed) version's mask, or the proposal again when the B-scan is back to unreviewed or rejected — and nothing is
deleted. Opening a project restores accepted B-scans and the pages of propagations still to review.
Shortcuts: Shift-A accept, Shift-R reject, Shift-N next unreviewed, Shift-P previous, Shift-U undo, Shift-Y redo. A
strip shows every B-scan's status (click to jump); per-class checkboxes hold the B-scan's image-level labels, derived
from the mask until the grader toggles one, and are stored with the accept.
"""

from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import CheckBox, Container, FileEdit, Label, LineEdit, PushButton, create_widget
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSettings

from oct_wsss.classes import ONTOLOGY
from oct_wsss.napari._layers import follow_proposals
from oct_wsss.napari._session import session
from oct_wsss.napari._status_strip import StatusStrip
from oct_wsss.napari._versions import show_version
from oct_wsss.store import ACCEPTED, PROPOSED, REJECTED, Correction, CorrectionStore, StoreError, derived_labels
from oct_wsss.store.store import DB_FILE


class ReviewWidget(Container):
    """Dock widget holding a project folder, the grader's name and the per-B-scan review status."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.settings = QSettings("napari-oct-wsss", "review")
        self.image = create_widget(annotation="napari.layers.Image", label="OCT image")
        self.labels = create_widget(annotation="napari.layers.Labels", label="lesion labels")
        follow_proposals(viewer, self.labels)
        self.project = FileEdit(label="project", mode="d", value=self.settings.value("project", "") or "")
        self.grader = LineEdit(label="grader", value=self.settings.value("grader", "") or "")
        self.open_button = PushButton(text="Open project / restore")
        buttons = [PushButton(text=t) for t in ("Accept (⇧A)", "Reject (⇧R)", "Next unreviewed (⇧N)",
                                                "Previous (⇧P)", "Undo (⇧U)", "Redo (⇧Y)")]
        self.undo_button, self.redo_button = buttons[4:]
        self.status = Label(value="no project open")
        self.present = {c.id: CheckBox(text=c.key.upper(), value=False, tooltip=f"{c.name} present in this B-scan")
                        for c in ONTOLOGY[1:]}
        boxes = list(self.present.values())
        rows = [Container(widgets=boxes[i:i + 3], layout="horizontal", labels=False) for i in range(0, len(boxes), 3)]
        self.present_row = Container(widgets=rows, labels=False, label="image labels")  # two rows: fits a narrow dock
        self.extend([self.image, self.labels, self.project, self.grader, self.open_button, *buttons,
                     self.present_row, self.status])
        self.strip = StatusStrip(lambda i: self.viewer.dims.set_current_step(0, i))
        self.native.layout().addWidget(self.strip)
        self.session = session(viewer)
        self.session.panels["Review"] = self
        self.image_labels: dict[int, set[int]] = {}  # B-scan -> the grader's own image-level labels (toggled)
        self._setting = False
        for cid, box in self.present.items():
            box.changed.connect(lambda value, c=cid: self._toggle(c, value))
        viewer.dims.events.current_step.connect(self._show_labels)
        self.labels.changed.connect(self._show_labels)
        self.open_button.changed.connect(self.open)
        actions = (self.accept, self.reject, self.next_unreviewed, self.previous, self.undo, self.redo)
        for button, action in zip(buttons, actions, strict=True):
            button.changed.connect(action)
        for key, action in zip(("Shift-A", "Shift-R", "Shift-N", "Shift-P", "Shift-U", "Shift-Y"), actions,
                               strict=True):
            viewer.bind_key(key, lambda _v, a=action: a(), overwrite=True)
        for widget in (self.image, self.labels):
            viewer.layers.events.inserted.connect(widget.reset_choices)
            viewer.layers.events.removed.connect(widget.reset_choices)

    @property
    def current(self) -> int:
        return int(self.viewer.dims.current_step[0])

    @property
    def decisions(self) -> dict[int, str]:
        """B-scan -> the decision in effect (the session's)."""
        return self.session.decisions

    def open(self, *_: Any) -> bool:
        """Open the project for the chosen image and put its accepted B-scans back into the labels layer."""
        image, labels = self.image.value, self.labels.value
        if image is None or labels is None:
            show_error("Review: choose the OCT image and the lesion labels layer first (propose, or add Labels)")
            return False
        if not self.project_chosen():
            show_error("Review: choose a project folder for the corrections (a new or an existing project)")
            return False
        s = self.session
        try:
            s.store = CorrectionStore(self.project.value)
        except StoreError as err:
            show_error(f"Review: {err}")
            return False
        self.settings.setValue("project", str(self.project.value))
        propose = s.panels.get("Propose")
        if propose is not None:  # Propose remembers its checkpoints per project
            propose.refresh_checkpoints()
        s.volume_id = s.store.volume_id(np.asarray(image.data))
        s.decisions.clear()
        records = s.records(labels)
        records.accepted.clear()
        self.image_labels = {}
        for c in s.store.corrections(s.volume_id, status=None):
            if c.bscan < labels.data.shape[0]:
                mask = c.arrays()["mask"] if c.status != REJECTED else None
                if mask is not None:
                    labels.data[c.bscan] = mask  # one refresh below, not one per B-scan
                if c.status == PROPOSED:  # a propagated page, still to review
                    records.propose(c.bscan, mask, c.proposal)
                else:
                    self.decisions[c.bscan] = c.status
                    if c.status == ACCEPTED:
                        records.accepted.add(c.bscan)
                self._keep_labels(c.bscan, c, mask)
        labels.refresh()
        if (propagate := s.panels.get("Propagate")) is not None:  # its Undo / Redo follow the project's last run
            propagate.refresh()
        self._show()
        return True

    def project_chosen(self) -> bool:
        """Whether the grader has chosen a project folder (a new one in an existing folder, or a project)."""
        folder = Path(self.project.value)
        unset = str(self.project.value) in ("", ".") or (folder == Path.cwd() and not (folder / DB_FILE).exists())
        return not unset and folder.parent.exists()

    def present_labels(self, bscan: int) -> set[int]:
        """The image-level labels of ``bscan``: the grader's toggles, else the lesion ids in its mask."""
        if bscan in self.image_labels:
            return set(self.image_labels[bscan])
        layer = self.labels.value
        if layer is None or bscan >= layer.data.shape[0]:
            return set()
        return set(derived_labels(np.asarray(layer.data[bscan])))

    def _toggle(self, class_id: int, value: bool) -> None:
        if self._setting:
            return
        present = self.present_labels(self.current)
        present = present | {class_id} if value else present - {class_id}
        self.image_labels[self.current] = present

    def _show_labels(self, *_: Any) -> None:
        """Set the checkboxes to the current B-scan's image-level labels (without counting it as a toggle)."""
        present = self.present_labels(self.current)
        self._setting = True
        try:
            for cid, box in self.present.items():
                box.value = cid in present
        finally:
            self._setting = False
        self._show_strip()
        self._show_history()

    def _show_history(self) -> None:
        """Enable Undo and Redo only where the current B-scan has a decision to take back or bring back."""
        s, i = self.session, self.current
        if s.store is not None:
            self.undo_button.enabled = s.store.can_undo(s.volume_id, i)
            self.redo_button.enabled = s.store.can_redo(s.volume_id, i)

    def _ready(self) -> bool:
        return self.session.store is not None or self.open()

    def _keep_labels(self, i: int, c: Correction | None, mask: np.ndarray | None) -> None:
        """The image-level labels of decision ``c`` on B-scan ``i``: kept where the grader set them apart from the
        lesions in its accepted ``mask``."""
        self.image_labels.pop(i, None)
        if mask is not None and c is not None and c.status == ACCEPTED and set(c.labels) != set(derived_labels(mask)):
            self.image_labels[i] = set(c.labels)

    def accept(self, *_: Any) -> None:
        """Store the current B-scan's labels as the grader's accepted correction."""
        if not self._ready():
            return
        i, labels, image, s = self.current, self.labels.value, self.image.value, self.session
        records = s.records(labels)
        self.settings.setValue("grader", self.grader.value)
        try:
            c = s.store.accept(s.volume_id, i, np.asarray(labels.data[i]), image=np.asarray(image.data[i]),
                               proposal=records.proposed.get(i), proposal_info=records.provenance.get(i, {}),
                               grader=self.grader.value, labels=tuple(sorted(self.present_labels(i))))
        except (StoreError, ValueError) as err:
            show_error(f"Accept failed, nothing was recorded: {err}")
            return
        self.decisions[i] = ACCEPTED
        records.accepted.add(i)
        show_info(f"B-scan {i} accepted (version {c.version})")
        self._show()

    def reject(self, *_: Any) -> None:
        """Record that the proposal of the current B-scan was rejected."""
        if not self._ready():
            return
        i, s = self.current, self.session
        s.store.reject(s.volume_id, i, grader=self.grader.value)
        self.decisions[i] = REJECTED
        s.records(self.labels.value).accepted.discard(i)
        self._show()

    def undo(self, *_: Any) -> None:
        """Take back the current B-scan's decision in effect: the one it replaced is in effect again."""
        self._step("undo")

    def redo(self, *_: Any) -> None:
        """Bring back the decision last undone on the current B-scan."""
        self._step("redo")

    def _step(self, action: str) -> None:
        if not self._ready():
            return
        i, s = self.current, self.session
        undone = s.store.current(s.volume_id, i)
        try:
            c = getattr(s.store, action)(s.volume_id, i)
        except StoreError as err:
            show_info(f"Review: {err}")
            return
        self._keep_labels(i, c, show_version(s, self.labels.value, i, c, undone))
        show_info(f"B-scan {i}: {action} — now " + ("unreviewed" if c is None else f"{c.status} (version {c.version})"))
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

    def refresh_status(self) -> None:
        """Redraw the counts, the strip, the labels and Undo/Redo after another panel moved the store's versions."""
        self._show()

    def _show(self) -> None:
        n = self.viewer.dims.nsteps[0]
        accepted = sum(s == ACCEPTED for s in self.decisions.values())
        rejected = sum(s == REJECTED for s in self.decisions.values())
        self._show_labels()  # and the strip, which knows the propagated B-scans
        propagated = self.strip.statuses.count("proposed")
        self.status.value = (f"{accepted} accepted, {rejected} rejected, {n - accepted - rejected} unreviewed of {n}"
                             + (f" ({propagated} propagated)" if propagated else ""))

    def _show_strip(self) -> None:
        """Each B-scan's decision; undecided ones a propagation wrote are *proposed* (to review)."""
        n = self.viewer.dims.nsteps[0] if self.viewer.dims.ndim else 0
        layer = self.labels.value
        info = self.session.records(layer).provenance if layer is not None else {}
        self.strip.set_status([self.decisions.get(i) or ("proposed" if info.get(i, {}).get("method") == "propagate"
                                                         else "unreviewed") for i in range(n)], self.current)
