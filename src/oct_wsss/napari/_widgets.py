"""Dock widgets. Thin: they collect parameters and call the library; the CLI offers the same.

No `from __future__ import annotations` here: magicgui reads the annotations at run time.
"""


from typing import Annotated

from napari.types import LayerDataTuple

from oct_wsss.napari._layers import image_layer, labels_layer
from oct_wsss.synth import make_volume

Probability = Annotated[float, {"widget_type": "FloatSlider", "min": 0.0, "max": 1.0, "step": 0.05}]


def synthetic_volume(
    seed: Annotated[int, {"min": 0, "max": 2**31 - 1}] = 0,
    n_bscans: Annotated[int, {"min": 1, "max": 256}] = 49,
    healthy: bool = False,
    srf: Probability = 0.4,
    irf: Probability = 0.5,
    ped: Probability = 0.3,
    ez: Probability = 0.3,
    hrf: Probability = 0.5,
    drusen: Probability = 0.3,
) -> list[LayerDataTuple]:
    """Generate a synthetic OCT volume with ground truth (same as ``oct-wsss synth``).

    The lesion sliders are the probability that the volume contains each class.
    """
    phantom = make_volume(
        seed=seed,
        n_bscans=n_bscans,
        healthy=healthy,
        prevalence={"srf": srf, "irf": irf, "ped": ped, "ez": ez, "hrf": hrf, "drusen": drusen},
    )
    tag = f"synthetic OCT seed {seed}" + (" (healthy)" if healthy else "")
    layers = [image_layer(phantom.volume, tag)]
    if not healthy:
        layers.append(labels_layer(phantom.labels, phantom.volume.spacing_mm, f"{tag} ground truth"))
    return layers  # type: ignore[return-value]
