"""The paper's prompt calibration: for every ground-truth HRF focus, prompt at its centre with each (crop, box)
pair and score the mask against that focus — mean Dice per pair says which crop and box sizes to use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from skimage import measure

from oct_wsss.classes import HRF
from oct_wsss.preprocess.inputs import to_unit
from oct_wsss.propose.hrf_refine import Crop, classical_region, sam_region
from oct_wsss.propose.sam2_backend import Sam2Backend
from oct_wsss.training.data import Sample
from oct_wsss.training.hrf_eval import dice


def grid_search(samples: Sequence[Sample], crops: Sequence[int], boxes: Sequence[int], *,
                sam2: Sam2Backend | None = None, min_area: int = 5, max_foci: int | None = None,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Rows {crop, box, dice, foci} (mean Dice over foci of at least ``min_area`` px) for each pair."""
    foci: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
    for s in samples:
        mask = s.load_mask()
        if mask is None:
            continue
        image = to_unit(s.load_image())
        for r in measure.regionprops(measure.label(mask == HRF, connectivity=2)):
            if r.area >= min_area:
                cy, cx = (int(round(v)) for v in r.centroid)
                foci.append((image, measure.label(mask == HRF, connectivity=2) == r.label, (cy, cx)))
        if max_foci is not None and len(foci) >= max_foci:
            foci = foci[:max_foci]
            break
    if not foci:
        raise ValueError("no ground-truth HRF foci in these B-scans' masks; give a data set with HRF masks")
    rows = []
    for c in crops:
        for b in boxes:
            scores = []
            for image, truth, centre in foci:
                crop = Crop.around(centre, int(c), image.shape)
                window = crop.take(image)
                if sam2 is not None:
                    region = sam_region(sam2, window, centre, crop, float(b))[0]
                else:
                    region = classical_region(window, (centre[0] - crop.y0, centre[1] - crop.x0), int(b))
                scores.append(dice(crop.paste(region, image.shape), truth))
            rows.append({"crop": int(c), "box": int(b), "dice": round(float(np.mean(scores)), 4),
                         "foci": len(scores)})
            log(f"crop {c} px, box {b} px: mean Dice {rows[-1]['dice']:.3f} over {len(scores)} foci")
    return rows
