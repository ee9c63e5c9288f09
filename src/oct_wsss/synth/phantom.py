"""`make_volume`: one synthetic Spectralis-like macular OCT volume with pixel ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from oct_wsss.classes import HRF, IRF, ONTOLOGY
from oct_wsss.synth import anatomy, dme, lesions, noise, vessels
from oct_wsss.synth import look as devlook
from oct_wsss.synth.anatomy import BAND_P50, BANDS, BOUNDARIES, MU_PER_PX, reflectivity
from oct_wsss.volume import DEFAULT_SPACING_MM, OctVolume

GENERATOR_VERSION = "5"
LESION_KEYS = tuple(lesions.DEFAULT_PREVALENCE)
#: Reflectivity (linear) of the extra structures, given as target display medians.
HRF_P50, VESSEL_P50, PED_FIBROVASCULAR_P50, DRUSEN_P50, SEPTUM_P50 = 215.0, 140.0, 95.0, 125.0, 120.0
MU_HRF, MU_VESSEL = 0.10, 0.2


@dataclass
class SyntheticVolume:
    """A phantom volume with its ground truth: ontology ids per pixel, per-B-scan presence, layers."""

    volume: OctVolume
    labels: np.ndarray
    image_labels: np.ndarray
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def _band_tables(i: int, changes: dict, lesion_list: list[dict], bright: dict,
                 fluid_p50: float) -> tuple[dict, dict]:
    """Per-band reflectivity and attenuation for B-scan ``i`` (scalars or per-column rows)."""
    refl = {b: reflectivity(BAND_P50[b]) * (bright[b][i] if b in bright else 1.0) for b in BANDS if b in BAND_P50}
    mu = {b: MU_PER_PX["retina"] for b in BANDS}
    gap = changes["EZ_GAP"][i]
    refl["EZ"] = refl["EZ"] * (1 - gap) + reflectivity(BAND_P50["MYOID"]) * gap
    refl["IZ"] = refl["IZ"] * (1 - gap) + reflectivity(BAND_P50["MYOID"]) * gap
    refl["OS"] = refl["OS"] * (1 - 0.6 * gap) + reflectivity(BAND_P50["MYOID"]) * 0.6 * gap
    refl["SRF"], mu["SRF"] = reflectivity(fluid_p50), MU_PER_PX["FLUID"]
    ped_content = next((les["content"] for les in lesion_list if les["kind"] == "ped"), "serous")
    ped_p50 = fluid_p50 if ped_content == "serous" else PED_FIBROVASCULAR_P50
    ped_wins = changes["PED"][i] >= changes["DRUSEN"][i]
    refl["SUBRPE"] = np.where(ped_wins, reflectivity(ped_p50), reflectivity(DRUSEN_P50))
    mu["SUBRPE"] = np.where(ped_wins, MU_PER_PX["FLUID"], MU_PER_PX["retina"] * 2)
    for b in ("RPE", "BM", "CHOROID"):
        mu[b] = MU_PER_PX[b]
    return refl, mu


def _render_bscan(i: int, height: int, surf: dict, changes: dict, lesion_list: list[dict],
                  grid: anatomy.Grid, vmap: tuple[np.ndarray, np.ndarray], choroid: tuple[np.ndarray, np.ndarray],
                  bright: dict, labels: np.ndarray, septum: np.ndarray, fluid_p50: float) -> np.ndarray:
    """Attenuated linear reflectivity (H, W) of B-scan ``i`` from its bands, lesions, DME septa and vessels."""
    width = surf["ILM"].shape[1]
    y = np.arange(height, dtype=np.float32)[:, None]
    refl_t, mu_t = _band_tables(i, changes, lesion_list, bright, fluid_p50)
    refl_t["CHOROID"] = refl_t["CHOROID"] * vessels.choroid_texture(choroid, i, surf["BM_BOTTOM"][i],
                                                                      surf["CSI"][i], height)
    refl = np.zeros((height, width), np.float32)
    mu = np.zeros((height, width), np.float32)
    prev_r, prev_m = 0.0, 0.0
    tops = dict(zip(BANDS, BOUNDARIES, strict=False))
    for band in BANDS + ("SCLERA",):
        top = surf[tops[band]][i] if band != "SCLERA" else surf["CSI"][i]
        r = refl_t[band] if band != "SCLERA" else reflectivity(BAND_P50["SCLERA"])
        m = mu_t[band] if band != "SCLERA" else MU_PER_PX["SCLERA"]
        frac = np.clip(y + 1.0 - top, 0.0, 1.0)  # share of the pixel below this band's top
        refl += (r - prev_r) * frac
        mu += (m - prev_m) * frac
        prev_r, prev_m = r, m
    # The ELM: a thin faint line at the top of the myoid zone.
    refl += reflectivity(95.0) * np.exp(-0.5 * ((y + 0.5 - surf["ELM"][i]) / 0.6) ** 2) * 0.5
    irf, hrf = labels == IRF, labels == HRF
    refl[irf], mu[irf] = reflectivity(fluid_p50), MU_PER_PX["FLUID"]
    refl[septum] = reflectivity(SEPTUM_P50)
    refl[hrf], mu[hrf] = reflectivity(HRF_P50), MU_HRF
    chord, diam = vmap[0][i], vmap[1][i]
    if chord.any():
        half_px = 0.5 * diam * chord * grid.px_per_um * 1e3
        centre = np.maximum(surf["ILM"][i] + half_px + 2.0, surf["NFL_GCL"][i])
        inside = np.clip(1.0 - ((y + 0.5 - centre) / np.maximum(half_px, 1e-3)) ** 2, 0, 1) * (chord > 0.05)
        refl += reflectivity(VESSEL_P50) * inside
        mu += MU_VESSEL * inside
    return noise.attenuate(refl, mu)


def draw_present(rng: np.random.Generator, seed: int, prev: dict[str, float], healthy: bool) -> dict[str, bool]:
    """Which lesion classes a volume holds, each with its prevalence; a volume that is not healthy holds at least
    one: when none is drawn, one class is drawn in proportion to prevalence from a stream of its own (so volumes
    that drew a class keep their bytes)."""
    present = {k: (not healthy) and bool(rng.uniform() < prev[k]) for k in LESION_KEYS}
    weights = np.array([prev[k] for k in LESION_KEYS], dtype=float)
    if healthy or any(present.values()) or weights.sum() <= 0:
        return present
    pick = np.random.default_rng(np.random.SeedSequence([seed, 0x1E5]))
    present[LESION_KEYS[int(pick.choice(len(LESION_KEYS), p=weights / weights.sum()))]] = True
    return present


def make_volume(seed: int = 0, *, n_bscans: int = 49, height: int = 496, width: int = 512, healthy: bool = False,
                prevalence: dict[str, float] | None = None,
                spacing_mm: tuple[float, float, float] = DEFAULT_SPACING_MM,
                laterality: str = "OD", look: str | dict | None = None,
                dme_share: float = lesions.DME_SHARE) -> SyntheticVolume:
    """Generate a synthetic macular volume (uint8) and its ground truth; same seed -> identical bytes.

    ``look``: None for the calibrated Spectralis look, "random" or a profile name ("spectralis", "cirrus",
    "topcon") for a device look drawn from the seed (``synth.look``; it may change the width), or a dict.
    ``dme_share``: probability that a volume with IRF also holds DME cyst clusters (``synth.dme``)."""
    prev = dict(lesions.DEFAULT_PREVALENCE)
    unknown = set(prevalence or {}) - set(prev)
    if unknown:
        raise ValueError(f"unknown lesion classes in prevalence: {sorted(unknown)}; known: {list(prev)}")
    prev.update(prevalence or {})
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    look_rng = np.random.default_rng(np.random.SeedSequence([seed, 0x100C]))  # the anatomy draws stay the same
    dev = devlook.resolve(look, look_rng)
    geom = anatomy.sample_geometry(rng, height)
    if dev["bm_row_fraction"] is not None:
        geom["bm_row"] = float(height * dev["bm_row_fraction"])
    present = draw_present(rng, seed, prev, healthy)
    grid = anatomy.make_grid(n_bscans, width, spacing_mm, laterality, tuple(geom["fovea_mm"]))
    plan = lesions.plan_lesions(rng, grid, present, grid.px_per_um, dme_share)
    vplan = vessels.plan_vessels(rng, grid)
    display = {"gain": float(rng.normal(1.0, 0.025)), "offset": float(rng.uniform(-3.0, 6.0))}

    texture = anatomy.texture_maps(grid, geom)
    thick = anatomy.thickness_maps(grid, geom, texture)
    changes = lesions.anatomy_changes(grid, plan)
    for band in ("SRF", "SUBRPE"):
        thick[band] = changes[band]
    for band in ("INL", "ONL"):
        thick[band] = thick[band] + changes[band]
    surf = anatomy.boundaries(anatomy.bm_surface(grid, geom), thick)
    vmap = vessels.vessel_map(grid, vplan)
    choroid = vessels.choroid_field(rng, n_bscans, height, width)
    floor = noise.noise_floor_profile(height, dev["floor_falloff"])
    clusters = [les for les in plan if les["kind"] == "dme"]
    fmt = dict(dev, gain=dev["gain"] * display["gain"], offset=dev["offset"] + display["offset"])

    data = np.empty((n_bscans, height, width), np.uint8)
    labels = np.empty((n_bscans, height, width), np.uint8)
    for i in range(n_bscans):
        cyst, septum = dme.masks(i, height, surf, clusters, grid)
        labels[i] = lesions.label_bscan(i, height, surf, changes, plan, grid, cyst)
        labels[i][septum & (labels[i] == IRF)] = 0  # a septum is tissue, also where a small cyst reaches it
        refl = _render_bscan(i, height, surf, changes, plan, grid, vmap, choroid, texture["brightness"], labels[i],
                             septum, dev["fluid_p50"])
        if dev["vignetting"] or dev["shadows"] or dev["snr"] != 1.0:
            refl *= dev["snr"] * devlook.signal_factor(look_rng, dev, height, surf["ILM"][i])
        data[i] = noise.form_image(rng, refl, floor, fmt)
    layers = {name: surf[name].astype(np.float32) for name in BOUNDARIES}
    if dev["n_ascans"] is not None and dev["n_ascans"] != width:
        data, labels, layers = devlook.resample_lateral(data, labels, layers, dev["n_ascans"])
        spacing_mm = (spacing_mm[0], spacing_mm[1], spacing_mm[2] * width / dev["n_ascans"])
    for i in range(n_bscans):
        devlook.pad_rows(look_rng, dev, data[i], labels[i])

    healthy = healthy or not labels.any()  # nothing placed (every prevalence 0): marked healthy, not "with lesions"
    image_labels = np.zeros((n_bscans, len(ONTOLOGY)), bool)
    image_labels[:, 0] = True
    for c in ONTOLOGY[1:]:
        image_labels[:, c.id] = (labels == c.id).any(axis=(1, 2))
    params = {
        "generator": "oct_wsss.synth", "generator_version": GENERATOR_VERSION, "seed": int(seed),
        "shape": list(data.shape), "spacing_mm": list(map(float, spacing_mm)), "laterality": laterality,
        "healthy": bool(healthy), "prevalence": prev, "present": present,
        "placed": sorted({"irf" if les["kind"] == "dme" else les["kind"] for les in plan}), "geometry": geom,
        "display": display, "look": dev, "lesions": plan, "vessels": vplan,
    }
    meta = {"device": f"synthetic ({dev['profile'].capitalize()}-like phantom)", "generator_version": GENERATOR_VERSION,
            "healthy": bool(healthy), "lesions": ",".join(params["placed"])}
    vol = OctVolume(data, spacing_mm=spacing_mm, laterality=laterality,
                    source={"format": "synthetic", "seed": int(seed)}, meta=meta)
    return SyntheticVolume(vol, labels, image_labels, layers, params)
