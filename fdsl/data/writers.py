"""Sinks: PNG encoding, atomic files and deterministic webdataset tar shards.

A writer never knows a formula: it takes uint8 arrays and bytes.
"""
from __future__ import annotations

import io
import json
import os
import tarfile

import cv2
import numpy as np

MODES = ("auto", "L", "RGB")
# Compression 1 with the FILTERED strategy: as small as the default, ~30% faster (specs, perf facts).
_PNG_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_FILTERED]


def encode_png(image: np.ndarray, mode: str = "auto") -> bytes:
    """PNG bytes of a uint8 HxW (gray) or HxWx3 (RGB) image.
    ``auto`` keeps the image's own channels (single-channel PNGs are ~3x cheaper; loaders convert
    to RGB), ``L`` stores gray, ``RGB`` stores three channels (byte parity with published files)."""
    if mode == "RGB" and image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif mode == "L" and image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(image), _PNG_FLAGS)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buffer.tobytes()


def temporary_name(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp{os.getpid()}")


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename: readers never see half a file."""
    tmp = temporary_name(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def atomic_write_json(path: str, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name


def remove_temporaries(directory: str) -> None:
    """Remove the half-written files a killed run left in ``directory``."""
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if is_temporary(name):
                os.remove(os.path.join(directory, name))


def tar_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """A webdataset shard: for each (key, {extension: bytes}) the members ``key.extension``.
    Member metadata is fixed (mtime 0, root owner) so equal samples give equal bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
