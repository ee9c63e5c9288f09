"""Guards that keep a corrupt or hostile file from making a reader allocate what its header claims.

Every size a header states is checked against the bytes the file actually has before anything is allocated:
uncompressed data must fit in the file; compressed data may expand at most ``MAX_EXPANSION`` times (deflate's
own limit is about 1032:1) plus ``SLACK_BYTES``. Parsers that read counted fields (construct, pydicom) are given
a memory-mapped view of the file instead of a file object: ``read(n)`` on a file object allocates ``n`` bytes up
front, so a 4-byte length field saying 4 GB costs 4 GB before the read comes back short; on a map it costs
nothing and the parser stops at the end of the file.
"""

from __future__ import annotations

import contextlib
import io
import mmap
from collections.abc import Iterator
from pathlib import Path

from oct_wsss.io.errors import OctReadError

#: Decoded bytes allowed per stored byte of compressed data.
MAX_EXPANSION = 1100
#: Allowance for small files (headers, tiny images) whatever their ratio.
SLACK_BYTES = 64 * 2**20


def check_size(path: str | Path, needed: int, available: int, what: str, *, compressed: bool = False) -> None:
    """Refuse ``needed`` decoded bytes when the file holds only ``available`` (times the expansion if compressed)."""
    needed, available = int(needed), max(int(available), 0)
    limit = SLACK_BYTES + MAX_EXPANSION * available if compressed else available
    if needed < 0 or needed > limit:
        how = f"at most {MAX_EXPANSION}:1 compression of {available}" if compressed else f"{available}"
        raise OctReadError(path, f"truncated or corrupt: {what} needs {needed} bytes, the file holds {how} bytes")


def product(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


@contextlib.contextmanager
def mapped(path: str | Path) -> Iterator[io.RawIOBase]:
    """The file as a read-only seekable stream that never allocates more than the file has."""
    with open(path, "rb") as fh:
        if Path(path).stat().st_size == 0:
            yield io.BytesIO(b"")
            return
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield mm  # type: ignore[misc]
        finally:
            try:
                mm.close()
            except BufferError:  # a parser kept a view into the map; it is released with the object
                pass


#: the most pages a TIFF may chain (an OCT volume has hundreds; a corrupt chain can claim millions)
MAX_TIFF_PAGES = 65_536


def check_tiff_chain(path: Path) -> int:
    """Walk a TIFF's chain of pages (IFD offsets only) and return its length; a chain that loops back on itself or
    runs past ``MAX_TIFF_PAGES`` is refused, since tifffile would walk it for minutes."""
    import struct

    if path.stat().st_size < 8:
        return 0
    with mapped(path) as data:
        if data[:2] not in (b"II", b"MM"):
            return 0  # not a TIFF header: tifffile says so itself
        end = "<" if data[:2] == b"II" else ">"
        big = struct.unpack_from(end + "H", data, 2)[0] == 43
        count, entry, link = (end + "Q", 20, end + "Q") if big else (end + "H", 12, end + "I")
        offset = struct.unpack_from(link, data, 8 if big else 4)[0]
        seen: set[int] = set()
        while 0 < offset < len(data):
            if offset in seen:
                raise OctReadError(path, f"TIFF page chain loops back to offset {offset} after {len(seen)} pages")
            if len(seen) >= MAX_TIFF_PAGES:
                raise OctReadError(path, f"TIFF chains more than {MAX_TIFF_PAGES} pages")
            seen.add(offset)
            if offset + struct.calcsize(count) > len(data):
                break
            at = offset + struct.calcsize(count) + struct.unpack_from(count, data, offset)[0] * entry
            if at + struct.calcsize(link) > len(data):
                break
            offset = struct.unpack_from(link, data, at)[0]
        return len(seen)


def image_nbytes(path: Path) -> tuple[int, bool]:
    """Decoded size in bytes a 2-D image file claims and whether it is compressed, from its header only."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        check_tiff_chain(path)

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise OctReadError(path, "TIFF without image data")
            return tiff_nbytes(tif)
    from PIL import Image

    with Image.open(path) as im:
        bands = len(im.getbands())
        bits = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}.get(im.mode, 8)
        compressed = im.format != "BMP" or bool(im.info.get("compression", 0))
        return im.width * im.height * bands * max(bits // 8, 1), compressed


def tiff_nbytes(tif) -> tuple[int, bool]:
    """Decoded size of a TiffFile's first series and whether any of its pages is compressed (header only)."""
    series = tif.series[0]
    compressed = any(int(getattr(p, "compression", 1) or 1) != 1 for p in series.pages[:16] if p is not None)
    return product(series.shape) * series.dtype.itemsize, compressed


def check_image(path: Path) -> None:
    """Refuse an image whose header claims more pixels than its bytes can hold (before any decoding)."""
    try:
        needed, compressed = image_nbytes(path)
    except OctReadError:
        raise
    except Exception as exc:
        raise OctReadError(path, f"not a readable image ({type(exc).__name__}: {str(exc)[:200]})") from exc
    check_size(path, needed, path.stat().st_size, "the image its header describes", compressed=compressed)
