"""AROI (Melinščak et al. 2021, Automatika 62(3-4)): Zeiss Cirrus B-scans of nAMD patients, layers + fluid masks.

Layout of the AROI release as this adapter reads it (checked against the paper's description, not against a copy of
the data — none was reachable here): ``ROOT/**/patient<N>/raw/labeled/patient<N>_raw<NNNN>.png`` and the class-id
mask of the same name in ``patient<N>/mask/number/`` (``mask/colour/`` is the colour rendering; ignored). Mask ids:
0 above ILM, 1 ILM-IPL/INL, 2 IPL/INL-RPE, 3 RPE-BM, 4 under BM (layers -> background), 5 PED, 6 SRF, 7 IRF.
``encoding`` overrides the id -> class-key table. Patient = ``patient<N>``; B-scan = the number after ``raw``.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from oct_wsss.classes import IRF, PED, SRF
from oct_wsss.training.data import LabelledSet, Sample
from oct_wsss.training.datasets._util import check_root, class_ids, natural, read_plane, value_mask

#: AROI mask id -> ontology id (ids 0-4 are layer bands: background)
ENCODING: tuple[tuple[int, int], ...] = ((5, PED), (6, SRF), (7, IRF))
_NUMBER = re.compile(r"(\d+)$")


def load_aroi(root: Path, encoding: dict[int, str] | None = None) -> LabelledSet:
    """Every labelled AROI B-scan under ``root`` with PED / SRF / IRF labels from its mask."""
    root = check_root(root, "aroi")
    table = ENCODING if encoding is None else tuple(
        (int(v), next(iter(class_ids([k], f"aroi encoding[{v}]")))) for v, k in encoding.items())
    images = natural(p for p in root.glob("**/raw/labeled/*") if p.suffix.lower() in (".png", ".tif", ".tiff"))
    if not images:
        raise ValueError(f"aroi: no patient<N>/raw/labeled/*.png under {root}")
    samples = []
    for image in images:
        patient_dir = image.parents[2]
        mask_path = patient_dir / "mask" / "number" / image.name
        if not mask_path.is_file():
            raise ValueError(f"aroi: {image} has no class-id mask {mask_path}")
        plane = read_plane(mask_path)
        top = int(plane.max(initial=0))
        if top > max(v for v, _ in table):
            raise ValueError(f"aroi: {mask_path} holds value {top}, beyond the encoding's ids; is it a colour mask? "
                             "(pass encoding: {value: class key} for another encoding)")
        present = set(np.unique(plane).tolist())
        labels = frozenset(c for v, c in table if v in present)
        m = _NUMBER.search(image.stem)
        samples.append(Sample(image, labels, patient_dir.name, partial(value_mask, mask_path, table),
                              volume=patient_dir.name, bscan=int(m.group(1)) if m else 0))
    classes = tuple(sorted({c for _, c in table}))
    return LabelledSet(samples, classes, name="aroi",
                       info={"encoding": {str(v): int(c) for v, c in table}, "patients": len({s.patient
                                                                                            for s in samples})})
