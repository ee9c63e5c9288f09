"""Optional per-class confidence Image layers of a proposal: the model's per-pixel score, one layer per class."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import Colormap

from oct_wsss.classes import ONTOLOGY
from oct_wsss.napari._layers import refresh_bscan

PREFIX = "confidence "


def confidence_name(class_id: int) -> str:
    """The layer name of a class's confidence, e.g. ``confidence SRF``."""
    return PREFIX + ONTOLOGY[class_id].key.upper()


class ConfidenceLayers:
    """Image layers (n, H, W) float32 in [0, 1] per predicted class, created once the model's classes are known."""

    def __init__(self, viewer: Any, shape: tuple[int, int, int], spacing_mm: tuple[float, ...]) -> None:
        self.viewer, self.shape, self.spacing = viewer, tuple(shape), tuple(spacing_mm)
        self.layers: list[Any] = []

    def prepare(self, classes: tuple[int, ...]) -> None:
        """One empty layer per class in ``classes`` (the columns of the proposal's scores), reused when it fits."""
        self.layers = []
        for c in classes:
            name = confidence_name(c)
            if name in self.viewer.layers and self.viewer.layers[name].data.shape == self.shape:
                self.layers.append(self.viewer.layers[name])
                continue
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            colour = np.array(ONTOLOGY[c].colour[:3])
            cmap = Colormap(np.array([[*colour, 0.0], [*colour, 1.0]]), name=f"oct-wsss {name}")
            self.layers.append(self.viewer.add_image(np.zeros(self.shape, np.float32), name=name, scale=self.spacing,
                                                     colormap=cmap, contrast_limits=(0.0, 1.0), blending="additive",
                                                     visible=False))

    def put(self, index: int, scores: np.ndarray) -> None:
        """Write one B-scan's scores (K, H, W) into the layers, in class order."""
        for layer, score in zip(self.layers, scores, strict=True):
            layer.data[index] = score
            refresh_bscan(self.viewer, layer, index)
