"""napari sample data: synthetic OCT volumes from the phantom, with their ground truth."""

from __future__ import annotations

from oct_wsss.napari._layers import LayerData, image_layer, labels_layer
from oct_wsss.synth import demo_phantom, make_volume


def synthetic_lesions() -> list[LayerData]:
    """The demo phantom (49 B-scans, every lesion class present), plus its ground-truth Labels layer."""
    phantom = demo_phantom()
    return [
        image_layer(phantom.volume, "synthetic OCT (lesions)"),
        labels_layer(phantom.labels, phantom.volume.spacing_mm, "ground truth"),
    ]


def synthetic_healthy() -> list[LayerData]:
    """A 49-B-scan healthy phantom (no lesions): what the anomaly models learn as normal."""
    phantom = make_volume(seed=8, healthy=True)
    return [image_layer(phantom.volume, "synthetic OCT (healthy)")]
