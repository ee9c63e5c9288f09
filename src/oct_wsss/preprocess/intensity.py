"""Intensity harmonisation: B-scans from different devices, gains, gammas and sizes mapped onto one intensity scale.

Spectralis exports (Duke, Bonn), Cirrus-like ones (brighter noise floor, other gamma) and resampled B-scans differ
mostly by a monotone intensity map. :func:`harmonise` undoes it with three robust anchors measured on each B-scan:
the **noise floor** (median outside the tissue mask: vitreous and below the choroid), the **retinal median** and a
**high retinal percentile** (99th, the RNFL / RPE bands). It maps floor -> ``FLOOR``, the high percentile -> ``HIGH``
linearly and, with a gamma fitted on the retinal median, median -> ``MID``. The targets are the synthetic
phantom's own values (``training/intensity_stats.py`` measures them), so phantom-like uint8 inputs come back nearly
unchanged and a model trained on the phantom sees real B-scans on its scale. Saturated and zero pixels (padding,
or noise clipped at 0) are left out of the anchors and keep their value.

With ``retina`` (the layer model's ILM-to-BM mask, ``intensity = "harmonised-layers"``) the anchors are the
vitreous above the ILM and the retina itself instead of the tissue heuristic (which takes in the choroid), mapped
onto the phantom's anchors measured the same way on its true retina (``LAYER_TARGETS``).

It is a preprocessing option a checkpoint records: ``normalisation = {"input": "unit", "intensity": "harmonised"}``.
Proposers call :func:`unit_inputs` with the checkpoint's setting; a checkpoint without the key gets plain
:func:`~oct_wsss.preprocess.inputs.to_unit`, exactly as before. Training applies it when a recipe asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology

from oct_wsss.preprocess.inputs import SATURATED, to_unit

#: targets (fractions of full scale): the phantom's noise floor, retinal median and retinal 99th percentile
FLOOR, MID, HIGH = 0.088, 0.25, 0.765
HIGH_PERCENTILE = 99.0
#: the fitted gamma is kept in this range, so a bad tissue mask cannot blow the image up
GAMMA_RANGE = (1 / 3, 3.0)
#: the same anchors taken on a retina mask (vitreous above the ILM; ILM to BM): the mean over the phantom's seeds 0-5
#: (3 B-scans each) on the generator's own ILM-to-BM truth, so no layer model's errors are built into the targets
#: (``training/intensity_stats.py --layers``; docs/results-real.md §5.1)
LAYER_TARGETS = (0.107, 0.296, 0.785)
UNIT, HARMONISED, HARMONISED_LAYERS = "unit", "harmonised", "harmonised-layers"
INTENSITIES = (UNIT, HARMONISED, HARMONISED_LAYERS)


def tissue_mask(unit: np.ndarray) -> np.ndarray:
    """The bright tissue band of one B-scan in [0, 1]: min 3x3 + median 5x5, above the Otsu level, 15x15 closing,
    largest region with holes filled. ``retina_mask`` thresholds at 0.75 x Otsu, which is scale-free but not
    offset-free: a raised noise floor (Cirrus-like) let it swallow the vitreous; the Otsu level itself is."""
    z = np.where(unit < SATURATED, unit, 0.0).astype(np.float32)
    z = ndi.median_filter(ndi.minimum_filter(z, size=3), size=5)
    if float(z.max()) <= float(z.min()):
        return np.zeros(z.shape, bool)
    mask = morphology.closing(z > filters.threshold_otsu(z), morphology.footprint_rectangle((15, 15)))
    labelled = measure.label(mask)
    if labelled.max() == 0:
        return mask
    return ndi.binary_fill_holes(labelled == np.argmax(np.bincount(labelled.ravel())[1:]) + 1)


def anchors(unit: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float, float]:
    """(noise floor, retinal median, retinal high percentile) of one B-scan in [0, 1]. Saturated pixels and exact
    zeros are left out: both are padding as often as signal (the Keshav B-scans are 60 % zero fill, which made the
    "floor" 0), and leaving zeros out everywhere, the phantom's targets included, keeps the rule the same."""
    mask = tissue_mask(unit) if mask is None else mask
    valid = (unit < SATURATED) & (unit > 0)
    outside, inside = unit[~mask & valid], unit[mask & valid]
    if inside.size < 16 or outside.size < 16:  # no usable retina / background split: whole-image percentiles
        inside = outside = unit[valid] if valid.any() else unit.ravel()
        return float(np.percentile(outside, 25)), float(np.median(inside)), float(np.percentile(inside, 99))
    return float(np.median(outside)), float(np.median(inside)), float(np.percentile(inside, HIGH_PERCENTILE))


def vitreous(retina: np.ndarray) -> np.ndarray:
    """The rows above a retina mask (H, W) in each A-scan that has retina: where the noise floor is measured."""
    return (np.cumsum(retina, axis=0) == 0) & retina.any(axis=0)[None]


def layer_anchors(unit: np.ndarray, retina: np.ndarray) -> tuple[float, float, float]:
    """(noise floor, retinal median, retinal high percentile) with the layer model's ILM-to-BM mask: the floor is the
    vitreous (above the retina in each A-scan that has one), the rest the retina; padding left out as in ``anchors``."""
    if retina.shape != unit.shape:
        raise ValueError(f"retina mask {retina.shape} does not match the B-scan {unit.shape}")
    valid = (unit < SATURATED) & (unit > 0)
    above, inside = unit[vitreous(retina) & valid], unit[retina & valid]
    if inside.size < 16 or above.size < 16:  # no retina found: whole-image percentiles, as ``anchors`` does
        return anchors(unit, np.zeros(unit.shape, bool))
    return float(np.median(above)), float(np.median(inside)), float(np.percentile(inside, HIGH_PERCENTILE))


def harmonise(bscan: np.ndarray, retina: np.ndarray | None = None) -> np.ndarray:
    """float32 B-scan in [0, 1] on the common scale: floor, retinal median and high percentile at the targets
    (with ``retina``, the layer model's ILM-to-BM mask: its anchors at ``LAYER_TARGETS``)."""
    x = to_unit(bscan)
    if x.ndim != 2:
        raise ValueError(f"harmonise takes one 2-D B-scan; got shape {x.shape}")
    if x.size == 0 or float(x.max()) <= float(x.min()):
        return x.astype(np.float32, copy=True)
    floor, mid, high = anchors(x) if retina is None else layer_anchors(x, np.asarray(retina, bool))
    to_floor, to_mid, to_high = (FLOOR, MID, HIGH) if retina is None else LAYER_TARGETS
    if high - floor < 1e-3:
        return x.astype(np.float32, copy=True)
    t = (x - floor) / (high - floor)  # 0 at the floor, 1 at the high percentile
    t_mid = (mid - floor) / (high - floor)
    target = (to_mid - to_floor) / (to_high - to_floor)
    gamma = float(np.clip(np.log(target) / np.log(t_mid), *GAMMA_RANGE)) if 0.0 < t_mid < 1.0 else 1.0
    t = np.where(t > 0, np.power(np.maximum(t, 0.0), gamma), t)
    y = np.clip(to_floor + t * (to_high - to_floor), 0.0, 1.0)
    y = np.where((x >= SATURATED) | (x <= 0), x, y)  # padding (saturated or zero) stays padding
    return y.astype(np.float32)


def intensity_of(normalisation: Mapping[str, Any] | None) -> str:
    """The intensity option a checkpoint's ``normalisation`` meta records ("unit" when the key is absent)."""
    value = (normalisation or {}).get("intensity", UNIT)
    if value not in INTENSITIES:
        raise ValueError(f"unknown intensity normalisation {value!r}; known: {', '.join(INTENSITIES)}")
    return str(value)


def check_intensity(value: str | None) -> str:
    """``value`` validated ("unit" for None), with a message that names the choices."""
    value = UNIT if value is None else value
    if value not in INTENSITIES:
        raise ValueError(f"intensity must be one of {', '.join(INTENSITIES)}; got {value!r}")
    return value


def unit_input(bscan: np.ndarray, intensity: str = UNIT, retina: np.ndarray | None = None) -> np.ndarray:
    """One B-scan as network input in [0, 1]: :func:`harmonise` for "harmonised", harmonised with ``retina`` (the layer
    model's mask, required) for "harmonised-layers", else ``to_unit``."""
    if intensity == HARMONISED_LAYERS:
        if retina is None:
            raise ValueError("intensity 'harmonised-layers' needs the layer model's retina mask "
                             "(oct_wsss.propose.retina.unit_inputs_for computes it)")
        return harmonise(bscan, retina)
    return harmonise(bscan) if intensity == HARMONISED else to_unit(bscan)


def unit_inputs(bscans: Sequence[np.ndarray], intensity: str = UNIT,
                retinas: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Stacked float32 (n, H, W) network inputs of same-sized B-scans (what every proposer feeds its network)."""
    masks = [None] * len(bscans) if retinas is None else retinas
    return np.stack([unit_input(b, intensity, m) for b, m in zip(bscans, masks, strict=True)]).astype(
        np.float32, copy=False)


def normalisation_meta(intensity: str = UNIT, **extra: Any) -> dict[str, Any]:
    """A checkpoint's ``normalisation`` meta; the ``intensity`` key only when harmonised (old checkpoints unchanged);
    "harmonised-layers" takes its mask from the bundled layer model unless the method records another."""
    meta: dict[str, Any] = {"input": "unit", **extra}
    if check_intensity(intensity) != UNIT:
        meta["intensity"] = intensity
    return meta
