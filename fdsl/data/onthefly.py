"""On-the-fly source: renders any fdsl database inside the DataLoader workers, no files at all.

Item i of epoch e is class i % C, instance e * instances_per_class + i // C, so every (epoch, index) is a
pure function of the database seed and a resumed run sees the same images. Uses only registry.create().
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from fdsl.data import registry


class OnTheFlyDataset(Dataset):
    def __init__(self, database, instances_per_class: int, transform=None):
        self.db = database
        self.num_classes = database.num_classes
        self.instances_per_class = instances_per_class
        self.transform = transform
        self.epoch = 0
        self.classes = [database.class_name(c) for c in range(self.num_classes)]
        self._params: dict[int, object] = {}

    @classmethod
    def from_registry(cls, name: str, num_classes: int, size: int, seed: int, instances_per_class: int, transform):
        # The DataLoader workers are the parallelism here; a renderer's own thread pool (numba) would only
        # compete with training for the cores. Read by numba at its first import.
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        ds = cls(registry.create(name, classes=num_classes, size=size, seed=seed), instances_per_class, transform)
        ds.warm_up()
        return ds

    def warm_up(self) -> None:
        """Render one image here, so JIT-compiled renderers (numba) are compiled once in the parent and
        inherited by every forked worker instead of being recompiled by each worker every epoch."""
        self[0]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_classes * self.instances_per_class

    def __getitem__(self, index: int):
        cls, k = index % self.num_classes, index // self.num_classes
        if cls not in self._params:
            self._params[cls] = self.db.class_params(cls)
        instance = self.epoch * self.instances_per_class + k
        array = np.asarray(next(iter(self.db.render(cls, self._params[cls], [instance]))))
        img = Image.fromarray(array).convert("RGB")
        return (self.transform(img) if self.transform else img), cls
