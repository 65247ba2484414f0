"""Recursive leaf-folder image datasets (docs/training.md): every png/jpg/jpeg under ROOT gets the label of its
leaf directory, classes in natural-sort order, images converted to RGB.

Images are read as uint8 arrays (fdsl.data.images: fdsl's own PNGs without PIL), from the files or from a
shared in-memory cache (fdsl.data.cache). ``transform`` gets the RGB PIL image, as timm's transforms expect;
``pixel_transform``, when set, gets the uint8 array instead (crop before converting, or device augmentation).

Unreadable images are skipped with a warning naming the file (the next index is used instead, as the
published timm loader did): one bad file must not kill a week-long run. More than MAX_CONSECUTIVE_BAD
failures in a row is an error, because then the data set itself is broken. The skips are counted in shared
memory (BadFiles), so the trainer can report each epoch's total although the images load in worker processes.
With ``strict`` (--strict-data) the first unreadable image is one error naming it instead.
"""
from __future__ import annotations

import os
import warnings

from torch.utils.data import Dataset

from fdsl.data import start_method
from fdsl.data.images import read_image, to_pil
from fdsl.data.naming import IMAGE_EXTENSIONS, natural_key
from fdsl.errors import UserError

MAX_CONSECUTIVE_BAD = 50


def find_split(root: str, split: str) -> str:
    """ROOT/<split> if it exists (validation also tries val), else ROOT itself."""
    candidates = [split] + (["val"] if split == "validation" else ["validation"] if split == "val" else [])
    for name in candidates:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return root


def has_split(root: str, split: str) -> bool:
    return find_split(root, split) != root


def scan(root: str, classes: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class index) pairs and the class names found under root. With `classes` (the training set's),
    labels follow that list, so a validation folder lacking a class keeps the right indices."""
    if not root or not os.path.isdir(root):
        raise UserError(f"data folder {root!r} does not exist; pass the dataset root (DIR/<class>/*.png)")
    by_label: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort(key=natural_key)
        images = [f for f in filenames if f.lower().endswith(IMAGE_EXTENSIONS)]
        if images:
            label = os.path.basename(os.path.relpath(dirpath, root)) if dirpath != root else ""
            by_label.setdefault(label, []).extend(os.path.join(dirpath, f) for f in images)
    if not by_label:
        raise UserError(f"no .png/.jpg/.jpeg images under {root}; expected {root}/<class>/<image>.png")
    found = sorted(by_label, key=natural_key)
    if classes is None:
        classes = found
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise UserError(f"{root} has classes the training set lacks: {', '.join(unknown[:5])}")
    index = {name: i for i, name in enumerate(classes)}
    samples = [(path, index[name]) for name in found for path in sorted(by_label[name], key=natural_key)]
    return samples, list(classes)


class BadFiles:
    """Count of unreadable images and the first one's path, shared with DataLoader workers. Made in fdsl's
    start method's context (fdsl.data.start_method), which the DataLoader also uses: a lock made for fork
    cannot be handed to a spawned worker."""

    def __init__(self):
        context = start_method.context()
        self._count = context.Value("i", 0)
        self._first = context.Array("c", 1024)

    def add(self, path: str) -> None:
        with self._count.get_lock():
            self._count.value += 1
            if not self._first.value:
                self._first.value = path.encode()[:1023]

    def take(self) -> tuple[int, str]:
        """(count, first path) since the last take, then reset."""
        with self._count.get_lock():
            count, first = self._count.value, self._first.value.decode(errors="replace")
            self._count.value, self._first.value = 0, b""
        return count, first


class ImageFolder(Dataset):
    pixel_transform = None  # uint8 array -> sample, used instead of `transform` when set
    cache = None  # fdsl.data.cache.ImageCache of every sample's pixels, when the folder fits in memory
    strict = False  # --strict-data: an unreadable image is an error, not a warning

    def __init__(self, root: str, transform=None, classes: list[str] | None = None, strict: bool = False):
        self.root = root
        self.samples, self.classes = scan(root, classes)
        self.transform = transform
        self.strict = strict
        self.bad_files = BadFiles()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.samples]

    def pixels(self, index: int):
        """uint8 HxW (gray) or HxWx3 pixels of sample ``index``; OSError/ValueError when unreadable."""
        if self.cache is not None:
            return self.cache.get(index)
        return read_image(self.samples[index][0])

    def __getitem__(self, index: int):
        for attempt in range(MAX_CONSECUTIVE_BAD):
            i = (index + attempt) % len(self.samples)
            try:
                pixels = self.pixels(i)
                break
            except (OSError, ValueError, SyntaxError) as err:
                path = self.samples[i][0]
                if self.strict:
                    raise UserError(f"unreadable image {path}: {err} (--strict-data; drop it to skip such "
                                    f"files with a warning)") from None
                self.bad_files.add(path)
                warnings.warn(f"skipping unreadable image {path}: {err}", stacklevel=2)
        else:
            raise UserError(f"{MAX_CONSECUTIVE_BAD} unreadable images in a row near {self.samples[index][0]}; "
                            "check the data folder")
        target = self.samples[i][1]
        if self.pixel_transform is not None:
            return self.pixel_transform(pixels), target
        img = to_pil(pixels)
        return (self.transform(img) if self.transform is not None else img), target
