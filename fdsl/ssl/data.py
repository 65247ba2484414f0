"""Images for the clustering methods: one indexable source (image folder, webdataset shards, or an fdsl
database rendered on the fly) seen through two transforms, the clustering view (resize + centre crop) and the
training view (random resized crop + flip, then the RotNet rotation), with the round's pseudo-labels.

Shards are made indexable here (IndexedShards: one scan of the tar headers, then seek + read per sample),
because clustering needs a stable index -> image map; only local .tar files qualify.
"""
from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from fdsl.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def cluster_transform(size: int = 224):
    """Resize(256) + CenterCrop(224) at 224 px, scaled for other sizes."""
    return T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(size: int = 224):
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class View(Dataset):
    """(transform(image), class label) of a source that returns PIL images (its own transform unset)."""

    def __init__(self, source, transform, indices: np.ndarray | None = None):
        self.source = source
        self.transform = transform
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.source)

    def __getitem__(self, i: int):
        img, target = self.source[int(self.indices[i]) if self.indices is not None else i]
        return self.transform(img), target


class PseudoLabelDataset(Dataset):
    """Training view: item `index * rotations + rotation` (from UniformClusterSampler) is
    (rotated image, super-class, sub-class), super-class = rotations * super-cluster + rotation."""

    def __init__(self, view: View, rotations: int = 1):
        self.view = view
        self.rotations = rotations
        self.super_labels = np.zeros(len(view), np.int64)
        self.sub_labels = np.zeros(len(view), np.int64)

    def __len__(self) -> int:
        return len(self.view) * self.rotations

    def set_labels(self, super_labels: np.ndarray, sub_labels: np.ndarray) -> None:
        self.super_labels = np.asarray(super_labels, np.int64)
        self.sub_labels = np.asarray(sub_labels, np.int64)

    def __getitem__(self, code: int):
        index, rotation = divmod(int(code), self.rotations)
        img, _ = self.view[index]
        if rotation:
            img = torch.rot90(img, rotation, dims=(1, 2))  # counter-clockwise, as published
        return img, self.super_labels[index] * self.rotations + rotation, self.sub_labels[index]


class IndexedShards(Dataset):
    """webdataset shards (<key>.png|jpg + <key>.cls) as a map-style dataset (local .tar files only)."""

    IMAGE_EXTS = ("png", "jpg", "jpeg", "JPEG")

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.entries: list[tuple[int, int, int]] = []  # (shard, offset, size) of each image
        self.targets: list[int] = []
        for shard, url in enumerate(urls):
            if not os.path.isfile(url):
                raise UserError(f"shard {url} is not a local file; clustering reads local .tar shards only")
            self._scan(shard, url)
        if not self.entries:
            raise UserError(f"no images in the shards {urls[0]} ...")
        self._handles: dict[int, object] = {}

    def _scan(self, shard: int, url: str) -> None:
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(url, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = os.path.basename(member.name).partition(".")
                    entry = samples.setdefault(key, {})
                    if ext == "cls":
                        entry["cls"] = int(tar.extractfile(member).read().decode().strip())
                    elif ext in self.IMAGE_EXTS:
                        entry["img"] = (member.offset_data, member.size)
        except (tarfile.TarError, OSError, ValueError) as err:
            raise UserError(f"shard {url} is missing, truncated or corrupt ({err}); re-write or remove it") from None
        for key, entry in samples.items():
            if "img" not in entry:
                raise UserError(f"shard {url}: sample {key} has no .png/.jpg")
            self.entries.append((shard, *entry["img"]))
            self.targets.append(entry.get("cls", -1))

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self):  # file handles stay in the process that opened them
        return {**self.__dict__, "_handles": {}}

    def __getitem__(self, i: int):
        shard, offset, size = self.entries[i]
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = open(self.urls[shard], "rb")  # noqa: SIM115 - kept open per worker
        handle.seek(offset)
        img = Image.open(io.BytesIO(handle.read(size))).convert("RGB")
        return img, self.targets[i]


@dataclass(frozen=True)
class SourceSpec:
    """Where the images come from: an image folder (`data_path`), webdataset shards, or a database rendered on
    the fly (`synthetic`, `num_classes` x `synthetic_instances` images of side `synthetic_size` or `img_size`)."""

    data_path: str = ""
    trainshards: str | None = None
    synthetic: str | None = None
    num_classes: int | None = None
    synthetic_instances: int = 10
    synthetic_seed: int = 0
    synthetic_size: int | None = None
    img_size: int = 224


def build_source(spec: SourceSpec):
    """(source returning (PIL image, class or -1), class labels [N] or None, description)."""
    if spec.synthetic:
        from fdsl.data.onthefly import OnTheFlyDataset

        size = spec.synthetic_size or spec.img_size
        ds = OnTheFlyDataset.from_registry(spec.synthetic, spec.num_classes, size, spec.synthetic_seed,
                                           spec.synthetic_instances, None)
        labels = np.arange(len(ds)) % ds.num_classes
        return ds, labels, (f"{spec.synthetic} rendered on the fly ({spec.num_classes} classes x "
                            f"{spec.synthetic_instances})")
    if spec.trainshards:
        from fdsl.data import shards

        ds = IndexedShards(shards.expand(spec.trainshards))
        labels = np.asarray(ds.targets)
        return ds, (labels if (labels >= 0).all() else None), f"{len(ds.urls)} shards"
    if not spec.data_path:
        raise UserError("no training data: pass --data_path DIR (an image folder), --trainshards or --synthetic DB")
    from fdsl.data import folder

    ds = folder.ImageFolder(spec.data_path)
    labels = np.asarray(ds.targets) if len(ds.classes) > 1 else None
    return ds, labels, f"image folder {spec.data_path} ({len(ds.classes)} class folders)"


def subset_indices(n: int, size_dataset: int | None, seed: int) -> np.ndarray | None:
    """A fixed random subset of size_dataset images (sorted), or None for all of them."""
    if not size_dataset or size_dataset >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size_dataset, replace=False))
