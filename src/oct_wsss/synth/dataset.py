"""`write_dataset`: a folder dataset of phantom volumes (PNG B-scans + masks, labels.csv, generation.json)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np

from oct_wsss import __version__
from oct_wsss.classes import ONTOLOGY
from oct_wsss.synth.phantom import GENERATOR_VERSION, make_volume

LABEL_COLUMNS = tuple(c.key for c in ONTOLOGY[1:])  # srf, irf, ped, ez, hrf, drusen, fluid
CSV_COLUMNS = ("volume", "bscan", "image", "mask", "patient", *LABEL_COLUMNS)


def volume_seed(seed: int, index: int) -> int:
    """The seed of volume ``index`` of a dataset generated with ``seed`` (reproducible on its own)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def healthy_indices(seed: int, n_volumes: int, healthy_fraction: float) -> set[int]:
    """Exactly ``round(healthy_fraction * n_volumes)`` volume indices, chosen reproducibly from ``seed``."""
    if not 0.0 <= healthy_fraction <= 1.0:
        raise ValueError(f"healthy_fraction must be within [0, 1]; got {healthy_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), n_volumes, 0x4EA17]))
    return {int(i) for i in rng.choice(n_volumes, size=round(healthy_fraction * n_volumes), replace=False)}


def write_dataset(out_dir: str | Path, n_volumes: int, *, healthy_fraction: float = 0.2, seed: int = 0,
                  **make_kwargs: Any) -> Path:
    """Write ``n_volumes`` phantom volumes to ``out_dir`` in the documented layout; returns ``out_dir``."""
    if n_volumes < 1:
        raise ValueError(f"n_volumes must be at least 1; got {n_volumes}")
    for reserved in ("seed", "healthy"):
        if reserved in make_kwargs:
            raise ValueError(f"{reserved!r} is set per volume by write_dataset; pass seed= for the dataset")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    healthy = healthy_indices(seed, n_volumes, healthy_fraction)
    side_rng = np.random.default_rng(np.random.SeedSequence([int(seed), n_volumes, 0x51DE]))
    sides = side_rng.choice(["OD", "OS"], size=n_volumes)
    rows: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    for index in range(n_volumes):
        vid, patient = f"synth_{index:04d}", f"P{index:04d}"
        kwargs = {"laterality": str(sides[index]), **make_kwargs}
        vseed = volume_seed(seed, index)
        synth = make_volume(vseed, healthy=index in healthy, **kwargs)
        vdir = out / vid
        (vdir / "bscans").mkdir(parents=True, exist_ok=True)
        (vdir / "masks").mkdir(parents=True, exist_ok=True)
        digits = max(3, len(str(synth.volume.n_bscans - 1)))
        for b in range(synth.volume.n_bscans):
            image, mask = f"{vid}/bscans/{b:0{digits}d}.png", f"{vid}/masks/{b:0{digits}d}.png"
            iio.imwrite(out / image, synth.volume.data[b])
            iio.imwrite(out / mask, synth.labels[b])
            present = synth.image_labels[b]
            rows.append({"volume": vid, "bscan": b, "image": image, "mask": mask, "patient": patient,
                         **{c.key: int(present[c.id]) for c in ONTOLOGY[1:]}})
        sidecar = {"spacing_mm": list(synth.volume.spacing_mm), "laterality": synth.volume.laterality,
                   "meta": {**synth.volume.meta, "volume_id": vid, "seed": vseed}}
        (vdir / "volume.json").write_text(json.dumps(sidecar, indent=2))
        volumes.append({"volume": vid, "patient": patient, "seed": vseed, "healthy": synth.params["healthy"],
                        "make_kwargs": kwargs, "params": synth.params})
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    generation = {"generator": "oct_wsss.synth", "generator_version": GENERATOR_VERSION,
                  "package_version": __version__, "seed": int(seed), "n_volumes": n_volumes,
                  "healthy_fraction": healthy_fraction, "make_kwargs": make_kwargs,
                  "volume_seeds": "numpy SeedSequence([seed, index]).generate_state(1)[0]",
                  "volumes": volumes}
    (out / "generation.json").write_text(json.dumps(generation, indent=2))
    return out
