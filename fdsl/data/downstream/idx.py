"""MNIST and Fashion-MNIST from their idx files (.gz as distributed, or uncompressed).

The idx format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number, 0x00 0x00, the
element type (0x08: unsigned byte) and the number of dimensions; then each dimension as a big-endian uint32;
then the elements in row-major order. Images are 0x00000803 (N x 28 x 28), labels 0x00000801 (N).
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from fdsl.data.downstream.source import ArraySplit, Source
from fdsl.errors import UserError

UBYTE = 0x08
#: where Debian's dataset-fashion-mnist package installs the files; MNIST has no Debian package
DEFAULT_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
#: label names, in label order (Fashion-MNIST: the "Labels" table of its README.md)
LABELS = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
SPLITS = {"train": "train", "test": "t10k"}  # fdsl split -> file name prefix


def read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it ends in .gz; a cut-short or corrupt gzip is one UserError."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        with open(path, "rb") as handle:
            return handle.read()
    except (EOFError, OSError, zlib.error) as err:
        raise UserError(f"{path} is truncated or not a gzip file ({err}); copy it again") from None


def parse_idx(data: bytes, ndim: int, path: str) -> np.ndarray:
    """The uint8 array of an idx file of ``ndim`` dimensions."""
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    wanted = (UBYTE << 8) | ndim
    if magic != wanted:
        found = "no magic number (file shorter than 4 bytes)" if magic is None else f"magic number 0x{magic:08x}"
        raise UserError(f"{path} has {found}, not 0x{wanted:08x} (idx{ndim} unsigned bytes); is it the right file?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path} is cut short inside its header; copy it again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise UserError(f"{path} holds {len(data) - header} bytes of data, not the {size} of its "
                        f"{' x '.join(map(str, shape))} header; the file is truncated or damaged, copy it again")
    return np.frombuffer(data, np.uint8, size, header).reshape(shape)


def find_file(folder: str, prefix: str, kind: str, ndim: int) -> str:
    """<prefix>-<kind>-idx<n>-ubyte, also with '.idx' and with .gz."""
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for name in [stem + ext for stem in stems for ext in (".gz", "")]:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise UserError(f"no {stems[0]}[.gz] in {folder}; pass --from DIR, the folder holding the four idx files")


def read_split(folder: str, prefix: str, name: str) -> tuple[ArraySplit, list[str]]:
    images_path = find_file(folder, prefix, "images", 3)
    labels_path = find_file(folder, prefix, "labels", 1)
    images = parse_idx(read_bytes(images_path), 3, images_path)
    labels = parse_idx(read_bytes(labels_path), 1, labels_path)
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels; "
                        "are they of the same split?")
    classes = len(LABELS[name])
    if len(labels) and labels.max() >= classes:
        raise UserError(f"{labels_path} has label {labels.max()}; {name} has {classes} classes")
    return ArraySplit(images, labels.astype(np.int64)), [images_path, labels_path]


def open_idx(name: str, folder: str | None) -> Source:
    """``name`` ("mnist" or "fashion-mnist") from the idx files in ``folder`` (default: Debian's folder)."""
    folder = folder or DEFAULT_DIRS[name]
    if not os.path.isdir(folder):
        hint = " (apt-get install dataset-fashion-mnist puts them there)" if name == "fashion-mnist" else ""
        raise UserError(f"{name}: folder {folder} does not exist; pass --from DIR, the folder holding the idx "
                        f"files{hint}")
    splits, files = {}, []
    for split, prefix in SPLITS.items():
        splits[split], read = read_split(folder, prefix, name)
        files += read
    return Source(LABELS[name], splits, [os.path.abspath(f) for f in files])
