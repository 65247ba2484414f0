"""Global image ids: the choices k-means makes by image (the initial centroids, the points that move
between clusters) depend on the id, not on the rank that holds the image, so they do not depend on the
world size."""
from __future__ import annotations

import numpy as np
import torch

from fdsl.engine.distributed import DistInfo, all_gather_rows


def strided_ids(n_local: int, info: DistInfo | None) -> np.ndarray:
    """Dataset indices of this rank's rows under samplers.ShardSampler (rank r holds r, r + W, ...)."""
    if info is None or not info.distributed:
        return np.arange(n_local, dtype=np.int64)
    return info.rank + info.world_size * np.arange(n_local, dtype=np.int64)


def priority(ids: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random non-negative int64 per global image id (SplitMix64 of id and seed): the same for an
    image whichever rank holds it, so choices by smallest priority do not depend on the world size."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids).astype(np.uint64) + np.uint64(seed % (1 << 63)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return ((z ^ (z >> np.uint64(31))) >> np.uint64(1)).astype(np.int64)


def smallest_over_ranks(values: np.ndarray, count: int, info: DistInfo) -> np.ndarray:
    """The `count` smallest of all ranks' int64 values, sorted (fewer if there are fewer)."""
    local = np.full(count, -1, np.int64)
    mine = np.sort(values)[:count]
    local[:mine.size] = mine
    everyone = all_gather_rows(torch.from_numpy(local), info).numpy().ravel()
    return np.sort(everyone[everyone >= 0])[:count]
