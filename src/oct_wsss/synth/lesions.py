"""Lesions of the phantom: placement in 3-D volume coordinates (mm), their effect on the anatomy
(elevations, swelling, EZ gaps) and their pixel ground truth.

Label precedence where lesions overlap (highest wins): HRF > IRF > SRF > PED > drusen > EZ disruption.
"""

from __future__ import annotations

import numpy as np

from oct_wsss.classes import DRUSEN, EZ, HRF, IRF, PED, SRF
from oct_wsss.synth import dme
from oct_wsss.synth.anatomy import Grid

#: Probability that a (non-healthy) volume contains each class.
DEFAULT_PREVALENCE = {"srf": 0.4, "irf": 0.5, "ped": 0.3, "ez": 0.3, "hrf": 0.5, "drusen": 0.3}
#: Drusen heights (px): median of the small ones, median of the large soft ones, maximum. The Bonn eye's drusen
#: (RPE elevation above BM, ``training/phantom_realism.py``): ~16 per B-scan, width median 7 px (p90 25), height
#: median 3 px (p90 9); with RPE more than 5 px above BM (``calibrate_synth.py``) median 9 px, max 27.
DRUSEN_HEIGHT_PX = (3.5, 9.0, 27.0)
#: Drusen per volume (log-uniform range) and the share of large soft drusen among them.
DRUSEN_FIELD, DRUSEN_LARGE_SHARE = (40, 600), 0.12
#: Cyst outlines: amplitude bound of each angular harmonic (k = 2, 3, 4) that makes an ellipse lobed or polygonal.
CYST_LOBE_AMPLITUDE = 0.12


def _lobes(rng: np.random.Generator) -> list[list[float]]:
    """Angular harmonics [k, amplitude, phase] of one cyst's outline (k = 2, 3, 4)."""
    return [[k, float(rng.uniform(0, CYST_LOBE_AMPLITUDE)), float(rng.uniform(0, 2 * np.pi))] for k in (2, 3, 4)]


def _near_fovea(rng: np.random.Generator, grid: Grid, radius_mm: float) -> tuple[float, float]:
    """A random (z, x) in mm within ``radius_mm`` of the fovea and inside the scanned area."""
    zmax, xmax = float(np.abs(grid.z).max()), float(np.abs(grid.x).max())
    r, a = radius_mm * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    z = float(np.clip(grid.fovea[0] + r * np.sin(a), -0.8 * zmax, 0.8 * zmax))
    x = float(np.clip(grid.fovea[1] + r * np.cos(a), -0.8 * xmax, 0.8 * xmax))
    return z, x


#: Probability that a volume with IRF also holds DME cyst clusters (``synth.dme``).
DME_SHARE = 0.7


def plan_lesions(rng: np.random.Generator, grid: Grid, present: dict[str, bool], px_per_um: float,
                 dme_share: float = DME_SHARE) -> list[dict]:
    """Draw the lesions of one volume as JSON-serialisable dicts (kind, centre mm, radii mm, height px); with IRF,
    DME clusters follow with probability ``dme_share`` (0 draws nothing, so the rest is as without them)."""
    h = px_per_um * 3.872  # heights are specified in px at the Spectralis axial spacing
    dz = float(grid.z[1, 0] - grid.z[0, 0]) if grid.z.shape[0] > 1 else 0.12
    out: list[dict] = []

    def dome(kind: str, radius: float, rx: tuple, rz: tuple, height: float, power: float, **extra) -> None:
        z, x = _near_fovea(rng, grid, radius)
        out.append({"kind": kind, "z_mm": z, "x_mm": x, "rx_mm": float(rng.uniform(*rx)),
                    "rz_mm": float(max(rng.uniform(*rz), 1.2 * dz)), "height_px": float(height * h),
                    "power": power, **extra})

    if present.get("srf"):
        for _ in range(1 + int(rng.uniform() < 0.2)):
            dome("srf", 0.8, (0.5, 1.4), (0.4, 1.1), rng.uniform(15, 55), 1.3)
    if present.get("ped"):
        dome("ped", 1.2, (0.3, 0.8), (0.3, 0.7), rng.uniform(15, 45), 0.7,
             content=str(rng.choice(["serous", "fibrovascular"])))
    if present.get("drusen"):  # a field of many small drusen and a few large soft ones (Bonn: ~16 per B-scan)
        for _ in range(int(np.exp(rng.uniform(*np.log(DRUSEN_FIELD))))):
            large = rng.uniform() < DRUSEN_LARGE_SHARE
            height = rng.lognormal(np.log(DRUSEN_HEIGHT_PX[1] if large else DRUSEN_HEIGHT_PX[0]), 0.4)
            rad = rng.uniform(0.08, 0.25) if large else float(np.clip(rng.lognormal(np.log(0.05), 0.4), 0.02, 0.12))
            dome("drusen", 2.0, (rad, rad), (rad * 0.8, rad * 1.2),
                 float(np.clip(height, 1.5, DRUSEN_HEIGHT_PX[2])), 1.0)
    if present.get("ez"):
        for _ in range(int(rng.integers(1, 3))):
            dome("ez", 1.2, (0.15, 0.7), (0.15, 0.5), 0.0, 1.0)
    if present.get("irf"):  # DME: a cluster of cysts around the fovea, the largest in the ONL (up to ~100 px if severe)
        cz, cx = _near_fovea(rng, grid, 0.35)
        big_h, big_r = ((60, 100), (0.2, 0.4)) if rng.uniform() < 0.25 else ((25, 60), (0.12, 0.3))
        n_big = int(rng.integers(1, 3))
        for i in range(int(rng.integers(6, 25))):
            big = i < n_big
            z, x = _near_fovea(rng, Grid(grid.z, grid.x, (cz, cx), 1.0, px_per_um), 0.25 if big else 0.6)
            r = float(rng.uniform(*big_r) if big else rng.uniform(0.05, 0.18))
            cyst = {"kind": "irf", "z_mm": z, "x_mm": x, "rx_mm": r,
                    "rz_mm": float(max(r * rng.uniform(0.8, 1.3), 1.2 * dz)),
                    "height_px": float((rng.uniform(*big_h) if big else rng.uniform(8, 35)) * h), "power": 0.5,
                    "host": "ONL" if big or rng.uniform() < 0.5 else "INL", "group": i, "septum": False,
                    "lobes": _lobes(rng)}
            out.append(cyst)
            if rng.uniform() < (0.6 if big else 0.3):  # confluent or septated: 1-2 overlapping lobes
                septum = bool(rng.uniform() < 0.6)
                for _ in range(int(rng.integers(1, 3))):
                    a, s = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 0.85)
                    d = r * rng.uniform(0.6, 1.0)
                    out.append(dict(cyst, z_mm=z + d * np.sin(a), x_mm=x + d * np.cos(a), rx_mm=r * s,
                                    rz_mm=max(cyst["rz_mm"] * s, 1.2 * dz), height_px=cyst["height_px"] * s,
                                    septum=septum, lobes=_lobes(rng)))
        if dme_share > 0 and rng.uniform() < dme_share:  # DME: large confluent septated cysts, ILM to ELM
            out += dme.plan_dme(rng, grid, h)
    if present.get("hrf"):
        n = grid.z.shape[0]
        zidx = np.abs(grid.z[:, 0] - grid.fovea[0]) < 2.5
        dx = float(grid.x[0, 1] - grid.x[0, 0])
        for _ in range(int(rng.integers(5, 31))):
            host = str(rng.choice(["OPL", "ONL", "INL", "IPL"], p=[0.35, 0.4, 0.15, 0.1]))
            b = int(rng.choice(np.flatnonzero(zidx))) if zidx.any() else int(rng.integers(n))
            x = _near_fovea(rng, grid, 2.5)[1]
            if any(o["kind"] == "hrf" and o["bscan"] == b and abs(o["x_mm"] - x) < 14 * dx for o in out):
                continue  # keep foci apart so that each stays a separate 2-10 px focus
            out.append({"kind": "hrf", "bscan": b, "z_mm": float(grid.z[b, 0]), "x_mm": x, "host": host,
                        "depth_frac": float(rng.uniform(0.2, 0.8)),
                        "diam_x_px": int(rng.integers(2, 9)), "diam_y_px": int(rng.integers(2, 8))})
    return out


def _rho2(grid: Grid, lesion: dict) -> np.ndarray:
    """Squared normalised en-face distance from the lesion centre (1 on its rim), (n, W)."""
    return ((grid.x - lesion["x_mm"]) / lesion["rx_mm"]) ** 2 + ((grid.z - lesion["z_mm"]) / lesion["rz_mm"]) ** 2


def footprint(grid: Grid, lesion: dict) -> np.ndarray:
    """Dome profile (1 - rho^2)^power over the en-face grid, 0 outside the lesion, (n, W) float32."""
    return (np.clip(1.0 - _rho2(grid, lesion), 0.0, 1.0) ** lesion["power"]).astype(np.float32)


def anatomy_changes(grid: Grid, lesions: list[dict]) -> dict[str, np.ndarray]:
    """En-face maps (n, W) of what lesions do to the anatomy: added band thickness in px ('SRF',
    'SUBRPE', 'INL', 'ONL'), PED and drusen parts of the sub-RPE space, and the EZ gap (0..1)."""
    zero = np.zeros((grid.z.shape[0], grid.x.shape[1]), np.float32)
    maps = {k: zero.copy() for k in ("SRF", "PED", "DRUSEN", "INL", "ONL", "EZ_GAP")}
    for les in lesions:
        kind = les["kind"]
        if kind == "hrf":
            continue
        if kind == "dme":
            bump = dme.swelling(grid, les)
            maps["ONL"], maps["INL"] = np.maximum(maps["ONL"], 0.7 * bump), np.maximum(maps["INL"], 0.3 * bump)
            continue
        fp = footprint(grid, les)
        if kind == "srf":
            maps["SRF"] += les["height_px"] * fp
        elif kind == "ped":
            maps["PED"] += les["height_px"] * fp
        elif kind == "drusen":
            maps["DRUSEN"] = np.maximum(maps["DRUSEN"], les["height_px"] * fp)
        elif kind == "ez":
            maps["EZ_GAP"] = np.maximum(maps["EZ_GAP"], (fp > 0.05).astype(np.float32))
        elif kind == "irf":  # the host band swells smoothly and wider than the cyst: the ILM rises gently
            wide = dict(les, rx_mm=max(2.0 * les["rx_mm"], 0.5), rz_mm=max(2.0 * les["rz_mm"], 0.5))
            swell = np.exp(-0.5 * _rho2(grid, wide))
            maps[les["host"]] = np.maximum(maps[les["host"]],
                                           0.75 * les["height_px"] * np.where(swell > 0.01, swell, 0.0))
    maps["SUBRPE"] = maps["PED"] + maps["DRUSEN"]
    return maps


def _rows(height: int) -> np.ndarray:
    return (np.arange(height, dtype=np.float32) + 0.5)[:, None]


def label_bscan(i: int, height: int, surf: dict[str, np.ndarray], changes: dict[str, np.ndarray],
                lesions: list[dict], grid: Grid, dme_cysts: np.ndarray | None = None) -> np.ndarray:
    """Ground-truth ontology ids of B-scan ``i`` (H, W) uint8; later draws win (module precedence);
    ``dme_cysts``: the B-scan's DME cyst mask (``dme.masks``), labelled IRF."""
    y = _rows(height)
    lab = np.zeros((height, surf["ILM"].shape[1]), np.uint8)

    def band(top: str, bottom: str) -> np.ndarray:
        return (y > surf[top][i]) & (y < surf[bottom][i])

    gap = changes["EZ_GAP"][i] > 0.5
    lab[band("EZ", "OS") & gap] = EZ
    sub = band("RPE_BOTTOM", "BM") & (changes["SUBRPE"][i] > 0.5)
    ped_wins = changes["PED"][i] >= changes["DRUSEN"][i]
    lab[sub & ~ped_wins] = DRUSEN
    lab[sub & ped_wins] = PED
    lab[band("SRF", "RPE") & (changes["SRF"][i] > 0.5)] = SRF
    lab[irf_mask(i, height, surf, lesions, grid)] = IRF
    if dme_cysts is not None:
        lab[dme_cysts] = IRF
    lab[hrf_mask(i, height, surf, lesions, grid)] = HRF
    return lab


def irf_mask(i: int, height: int, surf: dict[str, np.ndarray], lesions: list[dict], grid: Grid) -> np.ndarray:
    """Cysts of B-scan ``i``: ellipsoids centred in their swollen host band; the lobes of one group merge
    (confluent) or keep a ~2 px tissue septum where their normalised distances meet (septated)."""
    y = _rows(height)
    sub = Grid(grid.z[i:i + 1], grid.x, grid.fovea, grid.nasal_sign, grid.px_per_um)
    groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for les in lesions:
        if les["kind"] != "irf" or abs(float(grid.z[i, 0]) - les["z_mm"]) >= les["rz_mm"]:
            continue
        rho2 = _rho2(sub, les)[0]
        reach = 1.0 + sum(a for _, a, _ in les["lobes"])  # lobes may bulge past the ellipse by this factor
        cols = les["height_px"] * np.sqrt(np.clip(reach**2 - rho2, 0, None)) > 0.5
        if not cols.any():
            continue
        top, bottom = ("INL_OPL", "IPL_INL") if les["host"] == "INL" else ("ELM", "OPL_ONL")
        mid = 0.5 * (surf[top][i] + surf[bottom][i])
        vx = ((sub.x[0] - les["x_mm"]) / les["rx_mm"])[cols]
        vy = (y - mid[cols]) / (0.5 * les["height_px"])
        theta = np.arctan2(vy, vx)
        outline = 1.0 + sum(a * np.cos(k * theta + phase) for k, a, phase in les["lobes"])
        q = np.full((height, cols.size), 9.0, np.float32)  # 9: outside
        q[:, cols] = np.sqrt(rho2[cols] + vy**2) / outline
        g = les["group"]
        if g not in groups:
            groups[g] = (q, np.zeros(q.shape, bool))
            continue
        qmin, wall = groups[g]
        if les.get("septum"):
            wall |= (q < 1) & (qmin < 1) & (np.abs(q - qmin) < 2.0 / les["height_px"])
        groups[g] = (np.minimum(qmin, q), wall)
    mask = np.zeros((height, grid.x.shape[1]), bool)
    for qmin, wall in groups.values():
        mask |= (qmin < 1) & ~wall
    return mask


def hrf_mask(i: int, height: int, surf: dict[str, np.ndarray], lesions: list[dict], grid: Grid) -> np.ndarray:
    """HRF foci of B-scan ``i``: small ellipses (2-8 px) at a fraction of their host band's depth."""
    mask = np.zeros((height, grid.x.shape[1]), bool)
    yy, xx = np.ogrid[:height, : grid.x.shape[1]]
    for les in lesions:
        if les["kind"] == "hrf" and les["bscan"] == i:
            cx, cy, ry, rx = _hrf_centre(les, i, surf, grid)
            mask |= ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0
    return mask


def _hrf_centre(les: dict, i: int, surf: dict[str, np.ndarray], grid: Grid) -> tuple[float, float, float, float]:
    """Pixel centre (x, y) and semi-axes (ry, rx) of one HRF focus."""
    host = {"OPL": ("INL_OPL", "OPL_ONL"), "ONL": ("OPL_ONL", "ELM"),
            "INL": ("IPL_INL", "INL_OPL"), "IPL": ("GCL_IPL", "IPL_INL")}[les["host"]]
    dx = float(grid.x[0, 1] - grid.x[0, 0])
    col = int(np.clip(round((les["x_mm"] - float(grid.x[0, 0])) / dx), 0, grid.x.shape[1] - 1))
    top, bottom = float(surf[host[0]][i, col]), float(surf[host[1]][i, col])
    cy = top + les["depth_frac"] * (bottom - top)
    return col + 0.5, cy, les["diam_y_px"] / 2 + 0.01, les["diam_x_px"] / 2 + 0.01
