"""Samplers: repeated augmentation (DeiT's RASampler) and a rank shard for evaluation.

Written by hand because timm's RepeatAugSampler keeps the published truncation rules. Fixed here (D9):
seeded by (seed, epoch) rather than the epoch alone, no truncation to multiples of 256 (a data set of
fewer than 256 images gave an empty epoch), and it also works on one process (D5).
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


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
    """Rank r evaluates indices r, r+W, ... with no padding, so every image counts exactly once (D23)."""

    def __init__(self, dataset_len: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, dataset_len, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
