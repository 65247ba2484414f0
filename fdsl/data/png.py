"""A small PNG encoder for 8-bit gray and RGB arrays, tuned for formula-driven images, and its fast reader.

Formula-driven images are sparse line drawings. For them, scanline filter "none" gives smaller
files than libpng's adaptive filters, and an ISA-L deflate (the ``isal`` package) is several
times faster than zlib; together they encode a 512 px RCDB image ~8x faster than OpenCV
(bench/png.py). libpng (through OpenCV or PIL) has no way to ask for an ISA-L deflate, so the
container is written here: signature, IHDR, one IDAT, IEND.

The output is a plain PNG that every decoder reads. It is byte-deterministic for a given
deflate backend (``BACKEND``: "isal" when installed, else "zlib"); both backends decode to the
same pixels.

The reader (``decode``) takes the files this encoder writes back to a uint8 array with one inflate and no
copy per row: filter "none" on every row means the inflated stream IS the pixels, one filter byte ahead of
each row. It is ~3.5x faster than PIL on a 512 px RCDB image (bench/input.py). Any other PNG (other
filters, palette, 16-bit, alpha, interlaced) gives ``None``, and the caller uses a general decoder.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

try:
    from isal import isal_zlib as _deflate

    BACKEND = "isal"
except ImportError:  # pragma: no cover - exercised by the fallback test through BACKEND patching
    _deflate = zlib
    BACKEND = "zlib"
try:
    from isal.isal_zlib import IsalError as _InflateError
    from isal.isal_zlib import decompress as _inflate
except ImportError:  # pragma: no cover
    _inflate, _InflateError = zlib.decompress, zlib.error

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTERS = {"none": 0, "sub": 1, "up": 2}
#: deflate level: 1 is the fastest level that compresses these images well for both backends
LEVEL = 1


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def filtered_scanlines(image: np.ndarray, filter: str = "none") -> np.ndarray:
    """The image's rows, each prefixed by its filter-type byte, as PNG's IDAT stream holds them."""
    height = image.shape[0]
    rows = image.reshape(height, -1)
    step = 1 if image.ndim == 2 else image.shape[2]  # bytes per pixel
    out = np.empty((height, rows.shape[1] + 1), np.uint8)
    out[:, 0] = FILTERS[filter]
    if filter == "none":
        out[:, 1:] = rows
    elif filter == "sub":  # byte minus the byte one pixel to the left (mod 256)
        out[:, 1:1 + step] = rows[:, :step]
        np.subtract(rows[:, step:], rows[:, :-step], out=out[:, 1 + step:])
    else:  # up: byte minus the byte above
        out[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out


def encode(image: np.ndarray, filter: str = "none", backend: str | None = None) -> bytes:
    """PNG bytes of a uint8 HxW (gray) or HxWx3 (RGB) array."""
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"PNG encoder takes uint8 HxW or HxWx3 arrays, not {image.dtype} {image.shape}")
    if filter not in FILTERS:
        raise ValueError(f"PNG filter {filter!r} is not one of {', '.join(FILTERS)}")
    deflate = zlib if (backend or BACKEND) == "zlib" else _deflate
    height, width = image.shape[:2]
    color_type = 0 if image.ndim == 2 else 2  # gray or RGB; 8 bits, no interlace
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    data = deflate.compress(filtered_scanlines(np.ascontiguousarray(image), filter), LEVEL)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def describe() -> str:
    """The encoder settings, as recorded in a database's manifest."""
    version = getattr(__import__("isal"), "__version__", "?") if BACKEND == "isal" else zlib.ZLIB_VERSION
    return f"fdsl-png {BACKEND} {version} level {LEVEL}, filter none"


def header(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, channels) when ``data`` starts a PNG that ``decode`` reads (8-bit gray or RGB, not
    interlaced), else None. Needs the first 33 bytes only."""
    if len(data) < 33 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if depth != 8 or color not in (0, 2) or compression or filtering or interlace or not width or not height:
        return None
    return height, width, 1 if color == 0 else 3


def decode(data: bytes) -> np.ndarray | None:
    """A read-only uint8 HxW (gray) or HxWx3 (RGB) view of an 8-bit gray/RGB PNG whose rows all use filter
    "none" (the files ``encode`` writes), or None for any other PNG. A cut-short or corrupt file of that kind
    raises ValueError. Ancillary chunks (gAMA, tEXt, ...) are ignored, as PIL ignores them for pixels."""
    shape = header(data)
    if shape is None:
        return None
    height, width, channels = shape
    parts, position = [], 8
    while True:
        if position + 8 > len(data):
            raise ValueError("PNG cut short before its IEND chunk")
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = position + 8
        if body + length + 4 > len(data):
            raise ValueError(f"PNG cut short inside its {kind.decode(errors='replace')} chunk")
        if kind == b"IDAT":
            parts.append(data[body:body + length])
        elif kind == b"IEND":
            break
        elif kind in (b"PLTE", b"tRNS"):
            return None  # transparency or a suggested palette: leave the mode to the general decoder
        position = body + length + 4
    row = width * channels + 1
    try:
        raw = _inflate(parts[0] if len(parts) == 1 else b"".join(parts), bufsize=height * row)
    except (_InflateError, zlib.error) as err:
        raise ValueError(f"corrupt PNG data: {err}") from None
    if len(raw) != height * row:
        raise ValueError(f"PNG data holds {len(raw)} bytes, not the {height * row} of a {width}x{height} image")
    rows = np.frombuffer(raw, np.uint8).reshape(height, row)
    if rows[:, 0].any():
        return None  # some row uses a PNG filter: not one of ours
    pixels = rows[:, 1:]
    return pixels if channels == 1 else pixels.reshape(height, width, 3)
