"""What k-means does with empty clusters, and the minimum cluster size.

fdsl's rule, fixed from the published one (which re-seeded before every pick, so all empties of a pass split
the same cluster): each empty cluster takes a *different* non-empty donor, drawn with probability
proportional to its size; the donor's centroid is split in two by a small relative perturbation (faiss'
rule). After the last pass, a cluster still empty takes half of its donor's points, so no cluster is ever
returned empty. `min_size` generalises this (the super-clusters of DeeperCluster need k / nsc points each).
The published rule stays as split_like_published (docs/ssl.md, "Published vs fdsl", row 4a).
"""
from __future__ import annotations

import numpy as np
import torch

from fdsl.engine.distributed import DistInfo, all_reduce_sum
from fdsl.errors import UserError
from fdsl.ssl.kmeans.ids import smallest_over_ranks

SPLIT_EPS = 1.0 / 1024.0  # faiss' relative perturbation when it splits a cluster


def split_empty_clusters(centroids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> int:
    """Give each empty cluster a different, size-weighted donor and split the donor's centroid; in place.
    Returns the number of splits. Counts are updated as if the donor's points were shared in halves."""
    counts = counts.copy()
    splits = 0
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0).astype(np.float32)
    while True:
        empty = np.flatnonzero(counts == 0)
        donors_ok = np.flatnonzero(counts >= 2)
        if empty.size == 0 or donors_ok.size == 0:
            return splits
        take = min(empty.size, donors_ok.size)
        weights = (counts[donors_ok] - 1).astype(np.float64)
        donors = rng.choice(donors_ok, size=take, replace=False, p=weights / weights.sum())
        for e, m in zip(empty[:take], donors):
            c = centroids[m].copy()
            centroids[e] = c * (1 + SPLIT_EPS * sign)
            centroids[m] = c * (1 - SPLIT_EPS * sign)
            counts[e] = counts[m] // 2
            counts[m] -= counts[e]
            splits += 1


PUBLISHED_EPS = 1e-7  # distributed_kmeans.py:268-271


def split_like_published(centroids: np.ndarray, counts: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                         world_id: int, info: DistInfo) -> np.ndarray:
    """The published rule (distributed_kmeans.py:259-279), in place; returns the counts of the new labels.
    numpy is re-seeded with world_id (0 for the super-clusters, c for the sub-clusters of super-cluster c)
    before each pick, so every empty cluster k of a pass splits the same donor m, drawn among the clusters
    non-empty before the splits; k = m's centroid + (-1e-7, +1e-7, ...) per dimension, m moved the other way;
    count[k] = count[m] // 2, count[m] -= count[k]; then the first count[m] points of m are relabelled k
    (published: of this rank's points, by the global count; here the smallest image ids over all ranks, the
    same at one process). A donor split down to nothing stays empty here (published too); kmeans then fills
    it like any empty cluster, so no cluster is ever returned empty."""
    counts = counts.astype(np.int64).copy()
    nonempty = np.flatnonzero(counts > 0)
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 1, 1.0, -1.0).astype(np.float32) * np.float32(PUBLISHED_EPS)
    for k in np.flatnonzero(counts == 0):
        m = nonempty[np.random.RandomState(world_id).randint(len(nonempty))]
        centroids[k] = centroids[m] + sign
        centroids[m] = centroids[m] - sign
        counts[k] = counts[m] // 2
        counts[m] -= counts[k]
        members = np.flatnonzero(labels == m)
        moving = smallest_over_ranks(ids[members], int(counts[m]), info)
        labels[members[np.isin(ids[members], moving)]] = k
    relabelled = torch.from_numpy(np.bincount(labels, minlength=counts.size).astype(np.int64))
    return all_reduce_sum(relabelled, info).numpy()


def enforce_min_size(labels: np.ndarray, counts: np.ndarray, min_size: int, rng: np.random.Generator,
                     prio: np.ndarray, info: DistInfo) -> tuple[np.ndarray, np.ndarray]:
    """Move points so that every cluster holds >= min_size of them (over all ranks); labels changed in place.

    Each short cluster gets a different donor with spare points, drawn by its surplus; an empty cluster takes
    half of its donor (min_size 1), a short one what it lacks. The donor's points of smallest priority move,
    the same decision on every rank and for every world size."""
    counts = counts.astype(np.int64).copy()
    if counts.sum() < min_size * counts.size:
        raise UserError(f"{counts.sum()} points cannot fill {counts.size} clusters of at least {min_size}")
    while True:
        short = np.flatnonzero(counts < min_size)
        if short.size == 0:
            return labels, counts
        surplus = counts - min_size
        eligible = np.flatnonzero(surplus > 0)
        take = min(short.size, eligible.size)
        weights = surplus[eligible].astype(np.float64)
        donors = rng.choice(eligible, size=take, replace=False, p=weights / weights.sum())
        targets = short[:take]
        amounts = counts[donors] // 2 if min_size == 1 else np.minimum(min_size - counts[targets], surplus[donors])
        for donor, target, amount in zip(donors, targets, amounts):
            members = np.flatnonzero(labels == donor)
            moving = smallest_over_ranks(prio[members], int(amount), info)
            labels[members[np.isin(prio[members], moving)]] = target
        counts[donors] -= amounts
        counts[targets] += amounts
