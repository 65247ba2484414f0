"""Uniform-over-clusters sampling (DeepCluster's fix for degenerate clusters; docs/ssl.md).

Every pseudo-label present gets the same number of draws per epoch (with replacement only when the cluster
is smaller than that), the draws are shuffled and cut to `epoch_size`, and rank r takes every W-th one. With
`rotations=4` each draw also gets a rotation (0..3, counter-clockwise quarter turns), yielded as the single
integer index * 4 + rotation, which the PseudoLabelDataset decodes.

The order is a pure function of (seed, epoch, labels): every rank computes the same one, and a resumed run
replays it; `set_start(n)` skips this rank's first n samples without loading them (mid-epoch resume).
Unlike the published sampler, all (super-cluster, sub-cluster) labels are mixed in one stream, so no rank is
tied to a super-class.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler


def uniform_draws(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` dataset indices, about the same number from every label >= 0, shuffled."""
    valid = np.flatnonzero(labels >= 0)
    if valid.size == 0:
        raise ValueError("no labelled images to sample from")
    uniq, inverse, counts = np.unique(labels[valid], return_inverse=True, return_counts=True)
    per_label = size // uniq.size + 1
    starts = np.cumsum(counts) - counts
    # members of each label, each label's members in random order (random keys, sorted within the label)
    members = valid[np.lexsort((rng.random(valid.size), inverse))]
    big = counts >= per_label
    take_big = (starts[big][:, None] + np.arange(per_label)[None]).ravel()  # without replacement
    small_starts, small_counts = starts[~big], counts[~big]
    take_small = (small_starts[:, None]
                  + (rng.random((small_starts.size, per_label)) * small_counts[:, None]).astype(np.int64)).ravel()
    draws = members[np.concatenate([take_big, take_small])]
    return draws[rng.permutation(draws.size)[:size]]


class UniformClusterSampler(Sampler):
    def __init__(self, labels: np.ndarray, epoch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 rotations: int = 1):
        if epoch_size % num_replicas:
            raise ValueError(f"epoch_size {epoch_size} is not a multiple of {num_replicas} processes")
        self.labels = np.asarray(labels)
        self.epoch_size = epoch_size
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.rotations = rotations
        self.epoch = 0
        self.start = 0

    @property
    def num_samples(self) -> int:
        """This rank's samples in a full epoch."""
        return self.epoch_size // self.num_replicas

    def set_labels(self, labels: np.ndarray) -> None:
        self.labels = np.asarray(labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip this rank's first `start` samples of the current epoch (call after set_epoch)."""
        self.start = start

    def global_order(self) -> np.ndarray:
        """All ranks' draws of this epoch, encoded index * rotations + rotation."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x5EED])
        draws = uniform_draws(self.labels, self.epoch_size, rng)
        if self.rotations == 1:
            return draws
        return draws * self.rotations + rng.integers(0, self.rotations, draws.size)

    def __iter__(self):
        mine = self.global_order()[self.rank::self.num_replicas][self.start:]
        return iter(mine.tolist())

    def __len__(self) -> int:
        return self.num_samples - self.start
