"""Sinks: PNG encoding, atomic files and deterministic webdataset tar shards.

A writer never knows a formula: it takes uint8 arrays and bytes.
"""
from __future__ import annotations

import io
import json
import os
import socket
import tarfile

import cv2
import numpy as np

from fdsl.data import png

MODES = ("auto", "L", "RGB")


def encode_png(image: np.ndarray, mode: str = "auto") -> bytes:
    """PNG bytes of a uint8 HxW (gray) or HxWx3 (RGB) image.
    ``auto`` keeps the image's own channels (single-channel PNGs are ~3x cheaper; loaders convert
    to RGB), ``L`` stores gray, ``RGB`` stores three channels (byte parity with published files)."""
    if mode == "RGB" and image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif mode == "L" and image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return png.encode(image)


_HOST = socket.gethostname().split(".")[0].replace("/", "_")


def temporary_name(path: str) -> str:
    """A name beside ``path`` that no other process writes, also across hosts sharing the folder."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp{os.getpid()}.{_HOST}")


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path`` and rename: readers never see half a file.
    (os.open/os.write: half the cost of open() for the small files a database is made of.)"""
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
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
