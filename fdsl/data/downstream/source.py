"""What every downstream reader returns: the class names and, per split, the labels and the encoded images.

Array sources (MNIST idx files, CIFAR pickles) hold uint8 pixels and are encoded by fdsl's PNG writer; an
image folder's files are copied byte for byte (re-encoding a JPEG as PNG would only make it larger).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from fdsl.data import png


@dataclass
class ArraySplit:
    """uint8 images (N x H x W gray or N x H x W x 3 RGB) and their class indices."""
    images: np.ndarray
    labels: np.ndarray

    def encoded(self, index: int) -> tuple[bytes, str]:
        """(file bytes, extension) of image ``index``."""
        return png.encode(np.ascontiguousarray(self.images[index])), "png"


@dataclass
class FileSplit:
    """Image files and their class indices; the files are copied unchanged."""
    paths: list[str]
    labels: np.ndarray

    def encoded(self, index: int) -> tuple[bytes, str]:
        path = self.paths[index]
        with open(path, "rb") as handle:
            return handle.read(), path.rsplit(".", 1)[-1].lower()


@dataclass
class Source:
    """A downstream data set as read from the user's files."""
    classes: list[str]  # label names, in the data set's label order
    splits: dict  # "train" (and "test" when the source has one) -> ArraySplit | FileSplit
    files: list[str] = field(default_factory=list)  # what was read, for the manifest
    keep_names: bool = False  # an image folder's class folders keep their names

    def folder_names(self) -> list[str]:
        """Class folder names: the user's own for an image folder, else '<index>_<label name>' with the index
        zero-padded, so that fdsl's natural sort and a plain sort (torchvision, timm) both give the data set's
        own label order (bare names would sort 'ankle_boot' before 't-shirt_top')."""
        if self.keep_names:
            return list(self.classes)
        width = len(str(len(self.classes) - 1))
        names = []
        for index, label in enumerate(self.classes):
            slug = slugify(label)
            names.append(f"{index:0{width}d}" if slug == str(index) else f"{index:0{width}d}_{slug}")
        return names


def slugify(label: str) -> str:
    """A label as a folder name: 'T-shirt/top' -> 't-shirt_top', 'Ankle boot' -> 'ankle_boot'."""
    return re.sub(r"[^a-z0-9-]+", "_", label.strip().lower()).strip("_") or "class"
