"""Where the retina is, for proposers and trainers that mask or harmonise with it: the layer model's ILM-to-BM mask.

``retina="layers"`` (AGM's anomaly input and CAM damping, the student's lesion filter) and the intensity option
"harmonised-layers" (``preprocess.intensity.harmonise`` with a retina mask) both take it from
``propose.layers.retina_mask``; this module holds the choice and the per-device bundled model they share.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


class LayerModelUser:
    """What a proposer needs to run the layer model behind ``retina="layers"`` and "harmonised-layers" inputs: the
    bundled model unless ``layers_checkpoint`` names another, loaded on first use on the proposer's device."""

    retina: str | None
    intensity: str
    device: Any
    layers_checkpoint: str | Path | None = None
    _layer_model: LayerModel | None = None

    @property
    def uses_layers(self) -> bool:
        """Whether proposals run the layer model (a retina filter or "harmonised-layers" inputs)."""
        from oct_wsss.preprocess.intensity import HARMONISED_LAYERS

        return self.retina is not None or self.intensity == HARMONISED_LAYERS

    def layer_model(self) -> LayerModel:
        """The layer model (loaded on first use; ``_layer_model = None`` drops it, e.g. on a change of device)."""
        if self._layer_model is None:
            self._layer_model = bundled_model(str(self.device)) if self.layers_checkpoint is None else \
                LayerModel(self.layers_checkpoint, device=str(self.device))
        return self._layer_model

    def harmonising_model(self) -> LayerModel | None:
        """The layer model "harmonised-layers" inputs take their retina from; None for other intensities."""
        from oct_wsss.preprocess.intensity import HARMONISED_LAYERS

        return self.layer_model() if self.intensity == HARMONISED_LAYERS else None


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
