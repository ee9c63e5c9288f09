"""Retinal layers from the layer network: band probabilities -> ordered boundaries -> bands (fluid painted over).

Topological order is imposed per A-scan, not hoped for. For boundary k (between band k and band k + 1, k = 0..7)
let ``c_k(y)`` be the probability that row y lies in a band <= k (fluid renormalised away). The boundary is the split
row that best separates "<= k" above from "> k" below: ``argmax_y sum_{y' < y} (2 c_k(y') - 1)`` (last maximiser).
Because ``c_k <= c_{k+1}`` on every row, the difference of consecutive objectives is non-decreasing in y, so the
maximisers are ordered: ILM <= NFL_GCL <= ... <= BM on every A-scan by construction (``np.maximum.accumulate`` is
applied on top as a guard). The RPE line (the RPE's inner edge is not a Duke boundary) is placed at the brightest
smoothed row of the OS+RPE band, clamped between ISE_OS and BM. Bands are rebuilt from the boundaries and fluid
(band 9) is painted where the network says fluid is most likely, only between ILM and BM.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: boundary names in top-to-bottom order (the file format's names)
BOUNDARIES = ("ILM", "NFL_GCL", "IPL_INL", "INL_OPL", "OPL_ONL", "ISM_ISE", "ISE_OS", "RPE", "BM")
#: the Duke/ReLayNet band boundaries (k between band k and k + 1): every boundary except RPE
BAND_BOUNDARIES = ("ILM", "NFL_GCL", "IPL_INL", "INL_OPL", "OPL_ONL", "ISM_ISE", "ISE_OS", "BM")
FLUID_BAND = 9
N_BANDS = 10


#: B-scans whose probabilities wait for the ordering thread (each 10 x H x W float32: ~10 MB at 496 x 512)
ORDER_AHEAD = 8


class LayerError(ValueError):
    """Input the layer model cannot segment (no retina, wrong shape, no physical scale for thickness)."""


def normalise_bscan(image: np.ndarray) -> np.ndarray:
    """float32 in about [0, 1]: 1st percentile -> 0, 99.5th -> 1 (saturated padding rows do not shift it much)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, (1.0, 99.5))
    if hi - lo < 1e-6:
        return np.zeros_like(img)
    return np.clip((img - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.5).astype(np.float32)


def boundaries_from_probs(probs: np.ndarray) -> np.ndarray:
    """(10, H, W) band probabilities -> (8, W) float band-boundary rows (BAND_BOUNDARIES order), monotone in k.

    A boundary row y means: rows < y belong to the band above, rows >= y to the band below. float32 throughout (the
    network's precision; the same rows as float64 on the 13 Bonn B-scans checked, 53,248 boundary rows)."""
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 3 or p.shape[0] != N_BANDS:
        raise LayerError(f"expected ({N_BANDS}, H, W) band probabilities, got shape {p.shape}")
    layers = p[:FLUID_BAND]
    total = layers.sum(axis=0, keepdims=True)
    layers = np.where(total > 1e-8, layers / np.maximum(total, np.float32(1e-8)), np.float32(1.0 / FLUID_BAND))
    cum = np.cumsum(layers, axis=0)[:FLUID_BAND - 1]  # (8, H, W): P(band <= k)
    gain = np.cumsum(2.0 * cum - 1.0, axis=1, dtype=np.float32)  # objective at split after row y (split row y + 1)
    gain = np.concatenate([np.zeros((cum.shape[0], 1, cum.shape[2]), np.float32), gain], axis=1)  # rows 0..H
    height = gain.shape[1]
    last = height - 1 - np.argmax(gain[:, ::-1, :], axis=1)  # last maximiser
    return np.maximum.accumulate(last.astype(np.float64), axis=0)


def rpe_line(image: np.ndarray, ise_os: np.ndarray, bm: np.ndarray) -> np.ndarray:
    """RPE row per A-scan: the brightest (3-row smoothed) row of [ISE_OS, BM); BM where the band is empty."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    smooth = img.copy()
    smooth[1:-1] = (img[:-2] + img[1:-1] + img[2:]) / 3.0
    rows = np.arange(h)[:, None]
    inside = (rows >= ise_os[None, :]) & (rows < bm[None, :])
    scored = np.where(inside, smooth, -np.inf)
    best = np.argmax(scored, axis=0).astype(np.float64)
    return np.where(inside.any(axis=0), np.clip(best, ise_os, bm), bm)


def bands_from_boundaries(band_boundaries: np.ndarray, height: int) -> np.ndarray:
    """(8, W) monotone boundary rows -> (H, W) uint8 bands 0..8 (band k between boundary k - 1 and k)."""
    b = np.asarray(band_boundaries)
    rows = np.arange(height)[None, :, None]
    return (rows >= b[:, None, :]).sum(axis=0).astype(np.uint8)


def rebuild_bands(boundaries: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Bands (H, W) of edited (9, W) boundary rows (BOUNDARIES order); fluid kept where ``previous`` had it and it is
    still between ILM and BM."""
    keep = [BOUNDARIES.index(name) for name in BAND_BOUNDARIES]
    bands = bands_from_boundaries(np.asarray(boundaries)[keep], np.shape(previous)[0])
    bands[(np.asarray(previous) == FLUID_BAND) & (bands >= 1) & (bands <= 7)] = FLUID_BAND
    return bands


def ordered_labels(probs: np.ndarray, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(10, H, W) probabilities -> (bands uint8 (H, W) with fluid 9, boundaries (9, W) float in BOUNDARIES order)."""
    p = np.asarray(probs)
    height = p.shape[1]
    band_b = boundaries_from_probs(p)
    bands = bands_from_boundaries(band_b, height)
    fluid = (p.argmax(axis=0) == FLUID_BAND) & (bands >= 1) & (bands <= 7)
    bands[fluid] = FLUID_BAND
    ise_os, bm = band_b[6], band_b[7]
    rpe = rpe_line(image, ise_os, bm) if image is not None else (ise_os + bm) / 2.0
    return bands, np.vstack([band_b[:7], rpe[None], bm[None]])


def check_order(bands: np.ndarray) -> bool:
    """True when every A-scan's non-fluid band ids never decrease top to bottom (fluid only inside the retina)."""
    b = np.asarray(bands).astype(np.int16)
    if b.ndim == 2:
        b = b[None]
    filled = b.copy()
    # fluid takes the band id of the nearest non-fluid row above it, at least NFL (fluid right under the ILM)
    top = filled[:, 0]
    top[top == FLUID_BAND] = 1
    for y in range(1, filled.shape[1]):
        f = filled[:, y] == FLUID_BAND
        filled[:, y][f] = np.maximum(filled[:, y - 1][f], 1)
    fluid_in_retina = bool((filled <= 7)[b == FLUID_BAND].all())
    return fluid_in_retina and bool((np.diff(filled, axis=1) >= 0).all())


@dataclass
class LayerResult:
    """Bands (n, H, W) uint8, boundaries (n, 9, W) float rows (BOUNDARIES order), provenance."""

    bands: np.ndarray
    boundaries: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)


class LayerModel:
    """A loaded layer checkpoint: ``segment(bscan)`` and ``segment_volume(volume)``."""

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu") -> None:
        import torch

        from oct_wsss.checkpoint import Checkpoint
        from oct_wsss.models.inference import fused_for_inference
        from oct_wsss.models.layers import LayerNet, LayerNetConfig
        from oct_wsss.preprocess.device import resolve_device

        path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
        if path is None:
            raise LayerError("no layer checkpoint: none is bundled in this install; pass --checkpoint "
                             "(train one with training/layers_train.py)")
        self.checkpoint = Checkpoint.load(path, expect_method="layers")
        self.config = LayerNetConfig.from_dict(self.checkpoint.meta["architecture"])
        self.device = resolve_device(device)
        self.net = fused_for_inference(self.checkpoint.build(lambda: LayerNet(self.config))).to(self.device)
        self.path = path
        self._torch = torch

    def probs(self, bscans: np.ndarray, batch_size: int = 4) -> Iterator[np.ndarray]:
        """(n, H, W) raw B-scans -> yields (10, H, W) float32 band probabilities per B-scan."""
        torch = self._torch
        import torch.nn.functional as F

        data = np.asarray(bscans)
        n, h, w = data.shape
        sh, sw = self.config.input_size(h, w)
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                chunk = np.stack([normalise_bscan(b) for b in data[start:start + batch_size]])
                x = torch.from_numpy(chunk)[:, None].to(self.device)
                x = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False)
                logits = self.net(x.contiguous(memory_format=torch.channels_last))
                logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
                yield from torch.softmax(logits, dim=1).cpu().numpy()

    def segment(self, bscans: np.ndarray, progress: Callable[[int, int], None] | None = None,
                require_retina: bool = True) -> LayerResult:
        """Ordered bands and boundaries of (n, H, W) B-scans (a 2-D array is one B-scan).

        With ``require_retina`` a B-scan that shows no retina (``retina_present``) raises LayerError naming it;
        otherwise its bands are all 0 (above ILM) and its boundaries NaN."""
        import time

        data = np.asarray(bscans)
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3 or min(data.shape[1:]) < 16:
            raise LayerError(f"expected B-scans (n, H, W) with H, W >= 16; got shape {np.asarray(bscans).shape}")
        n, h, w = data.shape
        t0 = time.perf_counter()
        bands = np.zeros((n, h, w), np.uint8)
        bounds = np.zeros((n, len(BOUNDARIES), w), np.float32)
        empty: list[int] = []
        pending: deque[tuple[int, Future]] = deque()

        def collect() -> None:
            i, job = pending.popleft()
            bands[i], bounds[i] = job.result()
            if progress is not None:
                progress(i + 1, n)

        with ThreadPoolExecutor(max_workers=1) as pool:  # the ordering (numpy, one core) overlaps the next batch
            for i, p in enumerate(self.probs(data)):
                if not retina_present(p):
                    if require_retina:
                        raise LayerError(f"B-scan {i} shows no retina (the layer model finds no retinal band over "
                                         f"{RETINA_MIN_FRACTION:.0%} of its A-scans); nothing was written")
                    empty.append(i)
                    bounds[i] = np.nan
                    continue
                pending.append((i, pool.submit(ordered_labels, p, normalise_bscan(data[i]))))
                if len(pending) > ORDER_AHEAD:
                    collect()
            while pending:
                collect()
        seconds = time.perf_counter() - t0
        prov = {"method": "layers", "checkpoint": {"id": self.checkpoint.id, "sha256": self.checkpoint.sha256,
                                                     "file": self.path.name},
                "device": str(self.device), "timings": {"total_s": round(seconds, 3),
                                                        "per_bscan_s": round(seconds / max(n, 1), 4)},
                "bands": "Duke/ReLayNet: 0 above ILM, 1 NFL, 2 GCL+IPL, 3 INL, 4 OPL, 5 ONL+ISM, 6 ISE, 7 OS+RPE, "
                         "8 below BM, 9 fluid", "boundaries": list(BOUNDARIES), "bscans_without_retina": empty}
        return LayerResult(bands, bounds, prov)


def preload() -> None:
    """Import the layer network's modules (torch) on the calling thread; GUIs call this on their main thread before a
    worker builds the model (see ``registry.preload``)."""
    import oct_wsss.checkpoint
    import oct_wsss.models.layers
    import oct_wsss.preprocess.device  # noqa: F401


def default_checkpoint() -> Path | None:
    """The bundled layers checkpoint (``oct_wsss/weights/layers.safetensors``) when this install has it."""
    path = Path(__file__).resolve().parents[1] / "weights" / "layers.safetensors"
    return path if path.is_file() else None


#: a column counts as retina when the network puts at least this many pixels' probability mass in bands 1-7 or fluid
RETINA_MIN_PX = 20
#: a B-scan shows retina when at least this fraction of its A-scans do
RETINA_MIN_FRACTION = 0.1


def retina_present(probs: np.ndarray) -> bool:
    """Whether a B-scan's (10, H, W) band probabilities show a retina (see RETINA_MIN_PX, RETINA_MIN_FRACTION)."""
    p = np.asarray(probs)
    mass = p[1:8].sum(axis=(0, 1)) + p[FLUID_BAND].sum(axis=0)
    return bool((mass >= RETINA_MIN_PX).mean() >= RETINA_MIN_FRACTION)


def retina_mask_from_bands(bands: np.ndarray) -> np.ndarray:
    """Boolean ILM-to-BM mask from band ids (bands 1-7 and fluid)."""
    b = np.asarray(bands)
    return ((b >= 1) & (b <= 7)) | (b == FLUID_BAND)


def retina_mask(volume: Any, checkpoint: str | Path | None = None, device: str = "cpu",
                model: LayerModel | None = None) -> np.ndarray:
    """Boolean (n_bscans, H, W) retina mask (ILM to BM) of an ``OctVolume`` or an (n, H, W) / (H, W) array, from the
    layer model (the bundled checkpoint unless ``checkpoint`` or ``model`` is given)."""
    data = getattr(volume, "data", volume)
    model = model or LayerModel(checkpoint, device=device)
    return retina_mask_from_bands(model.segment(np.asarray(data), require_retina=False).bands)


# ---------------------------------------------------------------------------------------------------------------
# thickness and the ETDRS grid

#: ETDRS sectors: name -> (inner radius mm, outer radius mm, quadrant or None)
ETDRS = {"C0": (0.0, 0.5, None), "S1": (0.5, 1.5, "S"), "N1": (0.5, 1.5, "N"), "I1": (0.5, 1.5, "I"),
         "T1": (0.5, 1.5, "T"), "S2": (1.5, 3.0, "S"), "N2": (1.5, 3.0, "N"), "I2": (1.5, 3.0, "I"),
         "T2": (1.5, 3.0, "T")}


def has_physical_scale(volume: Any) -> bool:
    """False when the reader fell back to the default spacing (``meta['spacing_source'] == 'default'``)."""
    return getattr(volume, "meta", {}).get("spacing_source") != "default"


def thickness_map_um(boundaries: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """(n, 9, W) boundary rows -> (n, W) retinal thickness ILM -> BM in µm."""
    b = np.asarray(boundaries, dtype=np.float64)
    return (b[:, BOUNDARIES.index("BM")] - b[:, BOUNDARIES.index("ILM")]) * spacing_mm[1] * 1000.0


#: the foveal pit detector's geometry in mm: centre disc radius, and the ring (inner, outer radius) of the foveal rim
#: it is compared with (the rim's crest lies about 1 mm from the pit's centre in adult maculae)
PIT_DISC_MM, PIT_RING_MM = 0.1, (0.6, 1.2)
#: a pit must be at least this fraction of the map's median thickness below its rim on every side that has data
PIT_MIN_DEPTH = 0.05


def _side_means(t: np.ndarray, axis: int, r_in: int, r_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``t`` over offsets -r_out..-r_in and r_in..r_out along ``axis`` (NaN where that side leaves the map)."""
    n = t.shape[axis]
    idx = np.arange(n)
    lo, hi = [], []
    for d in range(r_in, r_out + 1):
        for sign, out in ((-1, lo), (1, hi)):
            j = idx + sign * d
            shifted = np.take(t, np.clip(j, 0, n - 1), axis=axis)
            bad = (j < 0) | (j >= n)
            shifted = np.where(np.expand_dims(bad, 1 - axis), np.nan, shifted)
            out.append(shifted)
    return np.nanmean(lo, axis=0), np.nanmean(hi, axis=0)


def fovea_from_thickness(thickness: np.ndarray,
                         spacing_mm: tuple[float, float, float] | None = None) -> tuple[float, float]:
    """(B-scan index, A-scan index) of the foveal pit: the point of a (n_bscans, W) thickness map that lies deepest
    below the rim around it (ring 0.6-1.2 mm) on both lateral sides and on each B-scan side inside the map.

    A pit, not the thinnest point: a thickness gradient or an atrophic edge is thin but has no rim on one side, and a
    fovea near the volume's edge (only part of its ring scanned) is still found. Without a physical scale the map is
    taken to span 6 mm square. The map's centre when no pit is at least 5 % of the median thickness deep."""
    import warnings

    from scipy.ndimage import uniform_filter

    t = np.asarray(thickness, dtype=np.float64)
    n, w = t.shape
    centre = (n - 1) / 2.0, (w - 1) / 2.0
    finite = np.isfinite(t)
    if n < 1 or w < 8 or not finite.any():
        return centre
    dz, dx = (spacing_mm[0], spacing_mm[2]) if spacing_mm else (6.0 / n, 6.0 / w)
    filled = np.where(finite, t, 0.0)
    size = (max(1, 2 * round(PIT_DISC_MM / dz) + 1), max(1, 2 * round(PIT_DISC_MM / dx) + 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = uniform_filter(filled, size, mode="nearest") / uniform_filter(finite * 1.0, size, mode="nearest")
    r_in, r_out = PIT_RING_MM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN sides beyond the map's edge
        left, right = _side_means(smooth, 1, max(1, round(r_in / dx)), max(1, round(r_out / dx)))
        sides = [left, right]
        if n > 1:
            sides += _side_means(smooth, 0, max(1, round(r_in / dz)), max(1, round(r_out / dz)))
        rim = np.nanmin(sides, axis=0)
        depth = np.where(np.isfinite(left) & np.isfinite(right), rim - smooth, np.nan)
    if not np.isfinite(depth).any() or np.nanmax(depth) < PIT_MIN_DEPTH * np.nanmedian(t):
        return centre
    z, x = np.unravel_index(np.nanargmax(depth), depth.shape)
    return float(z), float(x)


def etdrs_sectors(shape: tuple[int, int], spacing_mm: tuple[float, float, float], centre: tuple[float, float],
                  laterality: str | None = "OD", bscan_zero: str = "inferior") -> np.ndarray:
    """En-face (n_bscans, W) map of ETDRS sector indices (into ``list(ETDRS)``; -1 outside the 6 mm circle).

    Superior is towards higher B-scan indices when ``bscan_zero`` is "inferior" (Heidelberg's order: the first
    B-scan is the lowest on the fundus). Nasal is towards higher A-scan indices for a right eye (OD) and lower ones
    for a left eye (OS), as on a fundus photo seen from the front."""
    n, w = shape
    zz, xx = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    up = (zz - centre[0]) * spacing_mm[0] * (1 if bscan_zero == "inferior" else -1)
    right = (xx - centre[1]) * spacing_mm[2]
    nasal = right if laterality in (None, "OD") else -right
    r = np.hypot(up, nasal)
    quadrant = np.where(np.abs(up) >= np.abs(nasal), np.where(up >= 0, "S", "I"), np.where(nasal >= 0, "N", "T"))
    out = np.full(shape, -1, np.int16)
    for i, (_, (r0, r1, q)) in enumerate(ETDRS.items()):
        inside = (r >= r0) & (r < r1) if r0 > 0 else r < r1
        if q is not None:
            inside &= quadrant == q
        out[inside] = i
    return out


def etdrs_table(thickness_um: np.ndarray, sectors: np.ndarray) -> list[dict[str, Any]]:
    """Rows sector, inner_mm, outer_mm, mean_um, n_ascans (mean_um empty where no A-scan falls in the sector)."""
    rows = []
    for i, (name, (r0, r1, _)) in enumerate(ETDRS.items()):
        vals = thickness_um[sectors == i]
        vals = vals[np.isfinite(vals)]
        rows.append({"sector": name, "inner_mm": r0, "outer_mm": r1,
                     "mean_um": round(float(vals.mean()), 2) if vals.size else "", "n_ascans": int(vals.size)})
    return rows
