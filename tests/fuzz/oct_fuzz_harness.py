"""Shared machinery for the reader fuzz tests (``tests/test_io_fuzz.py``) and the atheris target.

* ``build_seeds(folder)``: one valid seed per reader (the real Spectralis .vol where the shared data has it, else
  files from ``io_builders``), each with the file that gets mutated and the path handed to ``read_volume``.
* ``mutate(data, ops)``: truncation, bit flips, byte overwrites, random bytes over the header, huge header fields.
* ``ReadWorker``: runs ``read_volume`` in a separate process under an address-space limit (``RLIMIT_AS``) and a
  per-input wall-clock limit, and classifies the result (``Outcome``): a valid volume, an ``OctReadError``, or a
  failure (another exception type, a MemoryError behind the error = an allocation the header asked for, a
  crash of the process, a hang past the time limit).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

REAL_VOL = TESTS.parent.parent / "shared" / "data" / "raw_format_samples" / "heidelberg_vol_retimat_onh" / "onh.vol"

#: Per-input wall-clock limit (seconds) in the worker; a valid seed reads in well under a second.
TIME_LIMIT_S = float(os.environ.get("OCT_FUZZ_TIME_LIMIT", "10"))
#: Address space the worker may grow by beyond what it holds after importing every reader (bytes).
MEMORY_HEADROOM = int(float(os.environ.get("OCT_FUZZ_MEMORY_HEADROOM_GB", "1.5")) * 2**30)
#: Values written over header fields (sizes, counts) by the "huge" mutation.
HUGE_VALUES = (10**9, 10**6, 2**31 - 1, 2**32 - 1, 65535, 0)

# Distinctive dimensions for the built seeds, so their header fields can be found in the bytes.
N, H, W = 5, 37, 53


@dataclass
class Seed:
    name: str  # e.g. "vol-real"
    fmt: str  # the reader it exercises (for counting per format)
    target: Path  # the file that gets mutated
    read_path: Path  # what read_volume is given (the target, or its folder)
    dims: tuple[int, ...]  # dimension values to look for as header fields
    fields: list[tuple[int, str]] = field(default_factory=list, repr=False)  # (offset, encoding) of header fields
    data: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.data = self.target.read_bytes()
        if not self.fields:
            self.fields = find_fields(self.data, self.dims)


_ENC = {"<I": 4, ">I": 4, "<H": 2, ">H": 2, "<i": 4}


def find_fields(data: bytes, dims: tuple[int, ...], limit: int = 64) -> list[tuple[int, str]]:
    """Offsets where a dimension value is stored (u32/u16 either endian, or ASCII decimal): header field candidates."""
    hits: list[tuple[int, str]] = []
    head = data[: 1 << 16]
    for value in sorted(set(dims)):
        for enc in ("<I", ">I", "<H", ">H"):
            if value >= 1 << (8 * _ENC[enc]):
                continue
            pat = struct.pack(enc, value)
            hits += [(m.start(), enc) for m in re.finditer(re.escape(pat), head)]
        hits += [(m.start(), f"ascii{len(m.group())}") for m in re.finditer(rb"(?<![0-9.])%d(?![0-9.])" % value, head)]
    hits = sorted(set(hits))
    return hits[:limit]


def set_field(data: bytearray, offset: int, enc: str, value: int) -> bytearray:
    if enc.startswith("ascii"):
        n = int(enc[5:])
        return data[:offset] + str(value).encode() + data[offset + n:]
    size = _ENC[enc]
    value = min(value, (1 << (8 * size)) - 1)
    data[offset:offset + size] = struct.pack(enc, value)
    return data


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply ops: ('truncate', n) | ('flip', pos, bit) | ('overwrite', pos, bytes) | ('garbage', bytes) |
    ('huge', offset, enc, value). Positions are taken modulo the current length."""
    out = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "truncate":
            out = out[: op[1] % (len(out) + 1)]
        elif not out:
            continue
        elif kind == "flip":
            out[op[1] % len(out)] ^= 1 << op[2]
        elif kind == "overwrite":
            pos = op[1] % len(out)
            out[pos:pos + len(op[2])] = op[2]
        elif kind == "garbage":
            out[: len(op[1])] = op[1]
        elif kind == "huge":
            if op[1] < len(out):
                out = set_field(out, op[1], op[2], op[3])
    return bytes(out)


# ---------------------------------------------------------------------------------------------------- seeds


def build_seeds(folder: Path, *, include_real: bool = True, include_zeiss: bool = True) -> dict[str, Seed]:
    """Valid seed files of every format, written under ``folder`` (each seed in its own subfolder)."""
    import imageio.v3 as iio
    import io_builders as b
    from scipy.io import savemat

    from oct_wsss.io import write_volume
    from oct_wsss.volume import OctVolume

    rng = np.random.default_rng(0)
    u16 = (rng.random((N, H, W)) * 4000).astype(np.uint16)
    u8 = (rng.random((N, H, W)) * 255).astype(np.uint8)
    seeds: dict[str, Seed] = {}

    def sub(name: str) -> Path:
        p = folder / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def add(name: str, fmt: str, target: Path, read_path: Path | None = None, dims=(N, H, W), fields=None) -> None:
        seeds[name] = Seed(name, fmt, target, read_path or target, tuple(dims), list(fields or []))

    if include_real and REAL_VOL.is_file():
        target = sub("vol-real") / "onh.vol"
        target.write_bytes(REAL_VOL.read_bytes())  # a temporary copy under pytest's tmp dir, deleted with it
        # HSF-OCT header: size_x @12, n_bscans @16, size_y @20, size_x_slo @48, size_y_slo @52, bscan_hdr_size @100
        add("vol-real", "heidelberg-vol", target, fields=[(o, "<I") for o in (12, 16, 20, 48, 52, 100)])
    refl = (rng.random((N, H, W)) * 0.5).astype(np.float32)
    add("vol-built", "heidelberg-vol", b.build_vol(sub("vol-built") / "raster.vol", refl))
    codes = (rng.random((N, H, W)) * 30000).astype(np.uint16)
    add("e2e", "heidelberg-e2e", b.build_e2e(sub("e2e") / "scan.e2e", codes))
    add("fds", "topcon", b.build_topcon(sub("fds") / "scan.fds", u16, kind="FDS"))
    add("fda", "topcon", b.build_topcon(sub("fda") / "scan.fda", u16, kind="FDA"))
    add("fda-jpeg", "topcon", b.build_topcon(sub("fda-jpeg") / "scan.fda", u8, kind="FDA", jpeg=True))
    add("bioptigen", "bioptigen", b.build_bioptigen(sub("bioptigen") / "scan.OCT", u16))
    add("dicom-8", "dicom", b.build_dicom(sub("dicom-8") / "scan.dcm", u8))
    add("dicom-16", "dicom", b.build_dicom(sub("dicom-16") / "scan.dcm", u16))
    if include_zeiss:
        cube = np.zeros((200, 1024, 200), np.uint8)
        cube[:, 400:600] = 128
        target = sub("zeiss") / "P1234_Macular Cube 200x200_1-1-2020_1-1-1_OD_sn1_cube_z.img"
        cube.tofile(target)
        add("zeiss", "zeiss-img", target, dims=(200, 1024))
    vol_u16 = OctVolume(u16.astype(np.float32) / 4000, (0.12, 0.0039, 0.0114), "OD")
    add("tiff", "tiff", write_volume(vol_u16, sub("tiff") / "scan.tif"))
    import tifffile

    tifffile.imwrite(sub("tiff-imagej") / "stack.tif", u16, imagej=True, resolution=(1 / 0.0114, 1 / 0.0039),
                     metadata={"spacing": 0.12, "unit": "mm", "axes": "ZYX"})
    add("tiff-imagej", "tiff", sub("tiff-imagej") / "stack.tif")
    npy = write_volume(OctVolume(u8, (0.12, 0.0039, 0.0114), "OS"), sub("npy") / "scan.npy")
    add("npy", "npy", npy)
    add("npy-sidecar", "npy", npy.with_suffix(".json"), read_path=npy, dims=(N, H, W))
    np.save(sub("npy-u16") / "raw.npy", u16)
    add("npy-u16", "npy", sub("npy-u16") / "raw.npy")
    add("npz", "npz", write_volume(vol_u16, sub("npz") / "scan.npz"))
    for ext in ("png", "jpg", "bmp"):
        target = sub(f"image-{ext}") / f"bscan.{ext}"
        iio.imwrite(target, u8[0])
        add(f"image-{ext}", "image", target)
    savemat(sub("mat") / "Farsiu_Ophthalmology_2013_AMD_Subject_1001.mat",
            {"images": np.moveaxis(u8, 0, -1), "layerMaps": np.zeros((N, W, 3)), "Age": np.array([[70]])})
    add("mat", "duke-mat", sub("mat") / "Farsiu_Ophthalmology_2013_AMD_Subject_1001.mat")
    xml = b.build_heyex_xml(sub("heyex-xml"), u8)
    add("heyex-xml", "heidelberg-xml", xml)
    add("heyex-xml-bscan", "heidelberg-xml", xml.parent / "bscan_2.tif", read_path=xml)
    retouch = b.build_retouch(sub("retouch"), u16)
    add("retouch-mhd", "retouch", retouch / "oct.mhd", read_path=retouch)
    add("retouch-raw", "retouch", retouch / "oct.raw", read_path=retouch)
    stack = sub("image-folder")
    for i, page in enumerate(u8):
        iio.imwrite(stack / f"{i}.png", page)
    (stack / "volume.json").write_text('{"spacing_mm": [0.12, 0.0039, 0.0114], "laterality": "OD"}')
    add("image-folder-png", "image-folder", stack / "3.png", read_path=stack)
    add("image-folder-json", "image-folder", stack / "volume.json", read_path=stack)
    return seeds


# ---------------------------------------------------------------------------------------------------- worker


@dataclass
class Outcome:
    kind: str  # "volume" | "error" | "other" | "memory" | "invalid" | "crash" | "timeout"
    detail: str = ""
    seconds: float = 0.0
    generic: bool = False  # an OctReadError from read_volume's last-line catch-all (no reader-specific reason)

    @property
    def ok(self) -> bool:
        return self.kind in ("volume", "error")


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def classify(path: str) -> tuple[str, str, bool]:
    """Read ``path`` in this process and classify the result (used inside the worker, and by atheris)."""
    import warnings

    from oct_wsss.io import OctReadError, read_volume
    from oct_wsss.volume import OctVolume

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = read_volume(path)
    except OctReadError as exc:
        if any(isinstance(e, MemoryError) for e in _chain(exc)) or "MemoryError" in str(exc):
            return "memory", f"{exc}", False
        return "error", exc.reason[:300], exc.reason.startswith("unreadable (")
    except BaseException as exc:
        return "other", "".join(traceback.format_exception_only(type(exc), exc))[-500:], False
    problems = []
    if not isinstance(vol, OctVolume):
        problems.append(f"returned {type(vol).__name__}")
    else:
        d = vol.data
        if d.ndim != 3 or 0 in d.shape:
            problems.append(f"shape {d.shape}")
        if d.dtype not in (np.uint8, np.float32):
            problems.append(f"dtype {d.dtype}")
        if d.dtype == np.float32 and d.size and not np.isfinite(d).all():
            problems.append("non-finite voxels")
        if not all(np.isfinite(s) and s > 0 for s in vol.spacing_mm):
            problems.append(f"spacing {vol.spacing_mm}")
    if problems:
        return "invalid", "; ".join(problems), False
    return "volume", f"{vol.data.shape} {vol.data.dtype}", False


def _worker_main(conn: Any, headroom: int, warm: list[str]) -> None:
    import resource

    for p in warm:  # import every reader (and itk's lazy modules) before the limit is set
        try:
            classify(p)
        except Exception:
            pass
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, resource.RLIM_INFINITY))
    conn.send(("ready", vm + headroom))
    while True:
        path = conn.recv()
        if path is None:
            return
        conn.send(classify(path))


class ReadWorker:
    """A reader process with an address-space limit; ``read`` enforces the per-input time limit."""

    def __init__(self, warm: list[Path] | None = None, time_limit: float = TIME_LIMIT_S,
                 headroom: int = MEMORY_HEADROOM, start_method: str = "spawn") -> None:
        # spawn: a fresh interpreter, nothing inherited from the test process (pytest's capture, threads, state)
        self.ctx = mp.get_context(start_method)
        self.warm = [str(p) for p in (warm or [])]
        self.time_limit, self.headroom = time_limit, headroom
        self.proc = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        # not daemonic: the worker may spawn (the Duke .mat parser)
        self.proc = self.ctx.Process(target=_worker_main, args=(child, self.headroom, self.warm), daemon=False)
        self.proc.start()
        child.close()
        if not self.conn.poll(120):
            raise RuntimeError("fuzz worker did not start")
        self.limit_bytes = self.conn.recv()[1]

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(5)
        self.restarts += 1

    def read(self, path: Path) -> Outcome:
        t0 = time.perf_counter()
        try:
            self.conn.send(str(path))
            ready = self.conn.poll(self.time_limit)
            if ready:
                kind, detail, generic = self.conn.recv()
                return Outcome(kind, detail, time.perf_counter() - t0, generic)
        except (EOFError, OSError, BrokenPipeError):
            ready = True
        elapsed = time.perf_counter() - t0
        self.proc.join(0.5)
        code = self.proc.exitcode
        self._kill()
        self._start()
        if not ready:
            return Outcome("timeout", f"no result after {self.time_limit:g} s", elapsed)
        return Outcome("crash", f"worker exited with code {code}", elapsed)

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(5)
        except (OSError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
