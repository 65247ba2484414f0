"""A sampler for iteration budgets: fixed-length "epochs" cut from an endless stream of shuffles.

HPT trains for N optimiser steps on data sets of any size (50 steps on 30,000 images, 50,000 steps on
2,000). The engine checkpoints, evaluates and logs per epoch, so an epoch here is a chosen number of
samples (a checkpoint / evaluation interval), not a pass over the data: the stream is the concatenation of
seeded permutations of the data set, dealt round-robin to the ranks, and epoch e of rank r is its slice
[e * S, (e + 1) * S). Every image is seen once per pass whatever the epoch length, and the order is a pure
function of (seed, epoch, rank), which is what the engine's Resumable wrapper needs for an exact resume.
"""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class StreamSampler(Sampler):
    def __init__(self, dataset_len: int, samples_per_epoch: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0):
        if dataset_len <= 0:
            raise ValueError("empty data set")
        self.n = dataset_len
        self.per_epoch = samples_per_epoch  # per rank
        self.world = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self._block: tuple[int, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _perm(self, block: int) -> torch.Tensor:
        if self._block is None or self._block[0] != block:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + block)
            self._block = (block, torch.randperm(self.n, generator=g))
        return self._block[1]

    def __iter__(self):
        first = self.epoch * self.per_epoch * self.world + self.rank
        for i in range(self.per_epoch):
            position = first + i * self.world
            yield int(self._perm(position // self.n)[position % self.n])

    def __len__(self) -> int:
        return self.per_epoch
