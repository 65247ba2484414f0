"""Samplers: repeated augmentation (DeiT's RASampler), a rank shard for evaluation, and the resumable
(index, seed) stream that makes augmentation independent of workers and resume.

Written by hand because timm's RepeatAugSampler keeps the published truncation rules. Fixed here (docs/training.md, D9):
seeded by (seed, epoch) rather than the epoch alone, no truncation to multiples of 256 (a data set of
fewer than 256 images gave an empty epoch), and it also works on one process (docs/training.md, D5).
"""
from __future__ import annotations

import itertools
import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from fdsl.data.seeds import derive_seed


class RASampler(Sampler):
    """Each index repeated `repeats` times in a row, then dealt round-robin to the ranks; each rank keeps
    N // world samples per epoch, so an epoch is about as long as without repetition."""

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, repeats: int = 3):
        self.dataset_len = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.repeats = repeats
        self.epoch = 0
        self.num_samples = math.ceil(dataset_len * repeats / num_replicas)
        self.num_selected = dataset_len // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.dataset_len, generator=g).repeat_interleave(self.repeats).tolist()
        total = self.num_samples * self.num_replicas
        order += order[: total - len(order)]
        return iter(order[self.rank:total:self.num_replicas][: self.num_selected])

    def __len__(self) -> int:
        return self.num_selected


class ShardSampler(Sampler):
    """Rank r evaluates indices r, r+W, ... with no padding, so every image counts exactly once (docs/training.md, D23)."""

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, dataset_len, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class Resumable(Sampler):
    """Wraps a sampler whose order is a pure function of (seed, epoch) and yields (index, augmentation seed)
    pairs, so that every sample's augmentation is a function of (seed, epoch, rank, position) alone: the same
    whatever the DataLoader's worker count, and a run resumed in the middle of an epoch (`skip`) sees the
    same images, augmented the same way, as a run that never stopped."""

    def __init__(self, sampler, seed: int = 0, rank: int = 0):
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def skip(self, num_samples: int) -> None:
        """The next iteration starts at this position (the rest of an interrupted epoch)."""
        self._skip = num_samples

    def __iter__(self):
        start, self._skip = self._skip, 0
        for position, index in enumerate(itertools.islice(iter(self.sampler), start, None), start):
            yield index, derive_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return len(self.sampler)


class Seeded(Dataset):
    """Reads (index, seed) items from a `Resumable` sampler: seeds torch, numpy and random for this sample's
    transforms, then puts the process's own generators back as they were (with DataLoader workers = 0 the
    dataset runs in the training process, whose RNG streams must not depend on the data)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # attributes of the wrapped dataset (bad_files, classes...), not its protocols
        if name == "dataset" or name.startswith("__"):  # e.g. Subset.__getitems__ expects plain indices
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item):
        index, seed = item
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator alone: torch.manual_seed also queues a CUDA seeding with a stack trace, which
            # cost 0.4 ms a sample, half of the demo's input time (bench/input.py)
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)
