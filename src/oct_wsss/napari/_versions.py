"""Show the store's version in effect on one B-scan of a lesions layer, after an undo or redo (Review's, of one
B-scan, or Propagate's, of a whole run): the layer's page, the session's records and its decisions follow the store.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oct_wsss.napari._layers import write_page
from oct_wsss.napari._session import Session
from oct_wsss.store import ACCEPTED, PROPOSED, REJECTED, Correction


def show_version(session: Session, layer: Any, i: int, c: Correction | None,
                 undone: Correction | None) -> np.ndarray | None:
    """Put version ``c`` (None: unreviewed) of B-scan ``i`` into ``layer`` and the session; returns ``c``'s mask (read
    once; None when it has none). ``undone``: the version in effect before; when it was a proposed page and ``c`` has
    no mask, the page and records it replaced come back (kept in its file); otherwise a maskless ``c`` shows the
    B-scan's recorded proposal."""
    records = session.records(layer)
    mask = c.arrays()["mask"] if c is not None and c.status in (ACCEPTED, PROPOSED) else None
    if c is not None and c.status == PROPOSED:
        records.propose(i, mask, c.proposal)
    page = mask
    if page is None and undone is not None and undone.status == PROPOSED:
        page = _restore_previous(records, i, undone)
    if page is None:
        page = records.proposed.get(i)
    if page is not None:
        write_page(layer, i, page)
    if c is not None and c.status in (ACCEPTED, REJECTED):
        session.decisions[i] = c.status
    else:
        session.decisions.pop(i, None)
    (records.accepted.add if c is not None and c.status == ACCEPTED else records.accepted.discard)(i)
    return mask


def _restore_previous(records: Any, i: int, undone: Correction) -> np.ndarray | None:
    """The page a proposed version replaced, with the proposal record and provenance it had (kept as
    ``previous_page`` / ``previous_proposal`` and ``replaced``)."""
    arrays = undone.arrays()
    for kept, value in ((records.proposed, arrays.get("previous_proposal")),
                        (records.provenance, undone.proposal.get("replaced"))):
        if value is None:
            kept.pop(i, None)
        else:
            kept[i] = value
    return arrays.get("previous_page")
