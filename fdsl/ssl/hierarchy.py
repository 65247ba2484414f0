"""DeeperCluster's two-level clustering (docs/ssl.md, "What one run does"): nsc super-clusters over all
images, then k / nsc sub-clusters inside each super-cluster. DeepCluster is nsc = 1 (level 1 is trivial);
RotNet is k = 1.

Every rank holds the features of its own images; both levels run over all ranks with the distributed k-means,
the sub-levels one super-cluster after the other. So any world size works (the published layout gave each
super-cluster its own group of GPUs and required world_size % super_classes == 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fdsl.ssl.kmeans.driver import KMeansOptions, kmeans
from fdsl.ssl.kmeans.ids import strided_ids


@dataclass
class Hierarchy:
    super_labels: np.ndarray  # [n_local] int64 in [0, nsc)
    sub_labels: np.ndarray  # [n_local] int64 in [0, k / nsc)
    super_centroids: np.ndarray  # [nsc, d]
    sub_centroids: np.ndarray  # [nsc, k / nsc, d]
    super_counts: np.ndarray  # [nsc] over all ranks
    sub_counts: np.ndarray  # [nsc, k / nsc] over all ranks
    losses: dict = field(default_factory=dict)  # level -> k-means loss per pass
    seconds: dict = field(default_factory=dict)  # level -> seconds

    def combined(self) -> np.ndarray:
        """One label per image: super * (k / nsc) + sub."""
        return self.super_labels * self.sub_centroids.shape[1] + self.sub_labels


def two_level(x: np.ndarray, nsc: int, k_sub: int, niter: int = 10, seed: int = 0, info=None,
              backend: str | None = None, device="cpu", log=None, empty_rule: str = "split") -> Hierarchy:
    """x: this rank's whitened features [n_local, d]. Every super-cluster gets at least k_sub images, and every
    sub-cluster at least one. empty_rule "published" seeds the empty-cluster picks as published: 0 for the
    super-clusters, c for the sub-clusters of super-cluster c."""
    ids = strided_ids(x.shape[0], info)
    opts = KMeansOptions(niter=niter, backend=backend, device=device, empty_rule=empty_rule, log=log)
    top = kmeans(x, nsc, replace(opts, seed=seed, min_size=k_sub, world_id=0), info, ids)
    sub_labels = np.zeros(x.shape[0], np.int64)
    sub_centroids = np.zeros((nsc, k_sub, x.shape[1]), np.float32)
    sub_counts = np.zeros((nsc, k_sub), np.int64)
    losses, seconds = {"super": top.losses}, {"super": top.seconds}
    for c in range(nsc):
        mask = top.labels == c
        part, part_ids = (x, ids) if nsc == 1 else (x[mask], ids[mask])
        res = kmeans(part, k_sub, replace(opts, seed=seed * 1000 + c + 1, world_id=c), info, part_ids)
        sub_labels[mask] = res.labels
        sub_centroids[c] = res.centroids
        sub_counts[c] = res.counts
        losses[f"sub{c}"] = res.losses
        seconds[f"sub{c}"] = res.seconds
    return Hierarchy(top.labels, sub_labels, top.centroids, sub_centroids, top.counts, sub_counts, losses, seconds)
