"""OctVolume: the one in-memory form of an OCT scan that every part of the project passes around."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Spectralis 20°×20° macular cube, 49 B-scans: z (between B-scans), y (depth), x (lateral), in mm.
DEFAULT_SPACING_MM: tuple[float, float, float] = (0.1205, 0.003872, 0.011182)


@dataclass
class OctVolume:
    """An OCT volume of shape (n_bscans, height, width).

    ``data`` is uint8 (as vendors export it) or float32 in [0, 1] (normalised from 16-bit or float
    sources). ``patient`` holds identifying fields (name, birth date, ids) apart from ``meta`` so that
    nothing written by the project has to filter them out of the scan metadata.
    """

    data: np.ndarray
    spacing_mm: tuple[float, float, float] = DEFAULT_SPACING_MM
    laterality: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    patient: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"OctVolume data must be (n_bscans, height, width); got shape {self.data.shape}")
        if self.data.dtype not in (np.uint8, np.float32):
            raise ValueError(f"OctVolume data must be uint8 or float32; got {self.data.dtype}")
        if len(self.spacing_mm) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise ValueError(f"spacing_mm must be three positive numbers (z, y, x); got {self.spacing_mm}")
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)  # type: ignore[assignment]
        if self.laterality is not None and self.laterality not in ("OD", "OS"):
            raise ValueError(f"laterality must be 'OD', 'OS' or None; got {self.laterality!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def n_bscans(self) -> int:
        return int(self.data.shape[0])

    @property
    def is_phantom(self) -> bool:
        """Whether this is the synthetic phantom rather than a scan of an eye (see :func:`is_phantom`)."""
        return is_phantom({**self.meta, "format": self.source.get("format")}, str(self.source.get("name", "")))

    def contrast_limits(self) -> tuple[float, float]:
        """Display range: the 0.5th–99.8th percentile, so that speckle outliers don't wash the image out."""
        sample = self.data[:: max(1, self.n_bscans // 8), ::2, ::2]
        lo, hi = (float(v) for v in np.percentile(sample, (0.5, 99.8)))
        if hi <= lo:
            hi = lo + (1.0 if self.data.dtype == np.float32 else 255.0) * 1e-3 + 1e-6
        return lo, hi

    def summary(self) -> dict[str, Any]:
        """A PHI-free description (what `oct-wsss read` prints and what exports may record)."""
        return {
            "format": self.source.get("format"),
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing_mm),
            "laterality": self.laterality,
            "dtype": str(self.data.dtype),
            "value_range": [float(self.data.min()), float(self.data.max())] if self.data.size else None,
            **{k: v for k, v in self.meta.items() if _is_plain(v)},
        }


def is_phantom(info: Mapping[str, Any], name: str = "") -> bool:
    """Whether a volume's summary (or an image layer's ``oct_wsss`` metadata) marks the synthetic phantom: format
    "synthetic" (``synth.make_volume``), a generator version or a "synthetic ..." device (a ``synth --out`` folder read
    back), or "synth" / "phantom" in its name. Anything else counts as a real scan."""
    device = str(info.get("device") or "").lower()
    lowered = name.lower()
    return (info.get("format") == "synthetic" or "generator_version" in info or device.startswith("synthetic")
            or "synth" in lowered or "phantom" in lowered)


def _is_plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None))) or (
        isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value)
    )
