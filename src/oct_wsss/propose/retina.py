"""Where the retina is, for proposers and trainers that mask or harmonise with it: the layer model's ILM-to-BM mask.

``retina="layers"`` (AGM's anomaly input and CAM damping, the student's lesion filter) and the intensity option
"harmonised-layers" (``preprocess.intensity.harmonise`` with a retina mask) both take it from
``propose.layers.retina_mask``; this module holds the choice and the per-device bundled model they share.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from oct_wsss.propose.layers import LayerModel, retina_mask

#: retina sources a proposer or trainer can mask with: None (its own intensity heuristic) or the layer model
RETINAS = (None, "layers")


def check_retina(value: str | None) -> str | None:
    """``value`` checked as a retina source (None: the intensity heuristic; "layers": ILM to BM of the layer model)."""
    if value not in RETINAS:
        raise ValueError(f"retina must be None or 'layers'; got {value!r}")
    return value


@functools.cache
def bundled_model(device: str = "cpu") -> LayerModel:
    """The bundled layer model, loaded once per device (what "harmonised-layers" inputs take their mask from)."""
    return LayerModel(device=device)


def unit_inputs_for(bscans: Sequence[np.ndarray], intensity: str, model: LayerModel | None = None) -> np.ndarray:
    """``preprocess.intensity.unit_inputs`` with the retina masks that "harmonised-layers" needs, from ``model`` (the
    bundled layer model by default); other intensities never run the layer model."""
    from oct_wsss.preprocess.intensity import HARMONISED_LAYERS, unit_inputs

    if intensity != HARMONISED_LAYERS:
        return unit_inputs(bscans, intensity)
    return unit_inputs(bscans, intensity, list(retina_mask(np.stack(bscans), model=model or bundled_model())))


def unit_input_for(bscan: np.ndarray, intensity: str, model: LayerModel | None = None) -> np.ndarray:
    """One B-scan through :func:`unit_inputs_for` (the trainers' per-sample form)."""
    return unit_inputs_for([bscan], intensity, model)[0]
