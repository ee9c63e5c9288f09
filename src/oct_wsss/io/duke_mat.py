"""Duke .mat volumes (Farsiu 2013 AMD, Chiu 2015 DME) through eyepy, parsed in a spawned child process so that a
corrupt file costs an error message, not the session."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from oct_wsss.io.errors import OctReadError
from oct_wsss.io.normalise import build_volume
from oct_wsss.volume import OctVolume


def read_duke_mat(path: Path) -> OctVolume:
    """A Duke (Farsiu 2013 AMD or Chiu 2015 DME) .mat volume through eyepy, with eyepy's published spacing."""
    from oct_wsss.io.limits import check_size, product

    with open(path, "rb") as fh:
        head = fh.read(128)
    if not head.startswith(b"MATLAB 5.0 MAT-file"):  # Duke files are v5; a v4 header has no magic to check
        raise OctReadError(path, "not a MATLAB 5 .mat file (no 'MATLAB 5.0 MAT-file' header; Duke volumes are v5)")
    try:
        from scipy.io import whosmat

        found = whosmat(path)  # (not a memory map: scipy's C stream reader keeps raw pointers into it)
        names = {name for name, _shape, _cls in found}
        shapes = {name: shape for name, shape, _cls in found}
    except Exception as exc:
        raise OctReadError(path, f"not a readable MATLAB .mat file ({exc.__class__.__name__}: {exc})") from exc
    if "images" not in names:
        raise OctReadError(path, "MATLAB file without an 'images' array (not a Duke OCT .mat)")
    check_size(path, product(shapes["images"]) * 8, path.stat().st_size, f"'images' {shapes['images']}",
               compressed=True)  # itemsize unknown from the header: assume 8 bytes; MATLAB compresses by default
    farsiu = "layerMaps" in names
    data, spacing, age = _parse_duke_isolated(path, farsiu)
    meta = {"dataset": "Duke (Farsiu 2013)" if farsiu else "Duke (Chiu 2015)",
            "spacing_note": "eyepy's published dataset spacing"}
    return build_volume(data, path, "duke-mat", spacing_mm=spacing, meta=meta,
                        patient={"age": age} if age is not None else {})


def _parse_duke_isolated(path: Path, farsiu: bool) -> tuple[np.ndarray, tuple[float, float, float], Any]:
    """Run eyepy's Duke importer in a spawned child: corrupt .mat files can crash scipy's C parser (SIGSEGV),
    which must cost the user an error message, not the napari session. A daemonic process (e.g. a DataLoader
    worker) may not have children, so there it parses in-process."""
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    if multiprocessing.current_process().daemon:
        try:
            return _parse_duke(str(path), farsiu)
        except Exception as exc:
            raise OctReadError(path, f"Duke .mat unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    try:
        return _duke_parser().submit(_parse_duke, str(path), farsiu).result(timeout=DUKE_PARSE_TIMEOUT_S)
    except TimeoutError as exc:
        _close_duke_parser(kill=True)
        raise OctReadError(path, f"the MATLAB parser did not finish in {DUKE_PARSE_TIMEOUT_S:g} s "
                                 "(a corrupt .mat file; a Duke volume parses in about a second)") from exc
    except BrokenProcessPool as exc:
        _close_duke_parser()
        raise OctReadError(path, "corrupt .mat file (the MATLAB parser crashed reading it)") from exc
    except Exception as exc:
        raise OctReadError(path, f"Duke .mat unreadable ({exc.__class__.__name__}: {str(exc)[:200]})") from exc


#: seconds a .mat may take to parse before it counts as corrupt (found by atheris: a 4.7 kB file parsed for minutes)
DUKE_PARSE_TIMEOUT_S = 60.0
_duke_pool: Any = None  # the one parser process (a ProcessPoolExecutor), started on first use
_duke_lock = threading.Lock()


def _duke_parser() -> Any:
    """The spawned parser process, kept between files: isolation without a ~1 s interpreter start per .mat."""
    global _duke_pool
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with _duke_lock:
        if _duke_pool is None:
            _duke_pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        return _duke_pool


def _close_duke_parser(kill: bool = False) -> None:
    """Drop a parser whose process died (or, with ``kill``, hangs), so the next file starts a fresh one."""
    global _duke_pool
    with _duke_lock:
        if _duke_pool is not None:
            for process in list(getattr(_duke_pool, "_processes", {}).values()) if kill else ():
                process.kill()
            _duke_pool.shutdown(wait=False, cancel_futures=True)
        _duke_pool = None


def _parse_duke(path: str, farsiu: bool) -> tuple[np.ndarray, tuple[float, float, float], Any]:
    from eyepy.io import import_duke_mat, import_dukechiu2_mat

    ev = (import_duke_mat if farsiu else import_dukechiu2_mat)(path)
    return np.asarray(ev.data), (ev.scale_z, ev.scale_y, ev.scale_x), ev.meta.get("age")
