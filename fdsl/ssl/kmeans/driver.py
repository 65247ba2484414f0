"""kmeans(): the passes over the rows of all ranks, from the initial centroids to the final labels."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from fdsl.engine.distributed import DistInfo, all_reduce_sum
from fdsl.errors import UserError
from fdsl.ssl.kmeans.empty import enforce_min_size, split_empty_clusters, split_like_published
from fdsl.ssl.kmeans.ids import priority, smallest_over_ranks, strided_ids
from fdsl.ssl.kmeans.search import Assigner, choose_backend


@dataclass(frozen=True)
class KMeansOptions:
    niter: int = 10  # centroid updates; one assignment pass follows
    seed: int = 0
    min_size: int = 1  # every cluster ends with at least this many points, over all ranks
    backend: str | None = None  # one of search.BACKENDS; None: search.choose_backend(device)
    device: torch.device | str = "cpu"
    empty_rule: str = "split"  # "split" (fdsl) or "published" (empty.split_like_published, seeded by world_id)
    world_id: int = 0
    log: Callable[[str], None] | None = None  # called with one line per pass


@dataclass
class KMeansResult:
    centroids: np.ndarray  # [k, d] float32 (from the last update, as published: not re-normalised)
    labels: np.ndarray  # [n_local] int64, this rank's rows
    counts: np.ndarray  # [k] int64, over all ranks; never below min_size
    losses: list[float] = field(default_factory=list)  # mean squared distance per pass
    seconds: float = 0.0


def initial_centroids(x: np.ndarray, ids: np.ndarray, k: int, seed: int, info: DistInfo) -> np.ndarray:
    """The k images of smallest priority over all ranks, in priority order (each row sent by its owner)."""
    prio = priority(ids, seed)
    chosen = smallest_over_ranks(prio, k, info)
    slot = np.searchsorted(chosen, prio)
    mine = np.flatnonzero((slot < chosen.size) & (chosen[np.minimum(slot, chosen.size - 1)] == prio))
    centroids = torch.zeros(k, x.shape[1], dtype=torch.float32)
    centroids[torch.from_numpy(slot[mine])] = torch.from_numpy(x[mine])
    return all_reduce_sum(centroids, info).numpy()


def kmeans(x: np.ndarray, k: int, options: KMeansOptions | None = None, info: DistInfo | None = None,
           ids: np.ndarray | None = None) -> KMeansResult:
    """k-means of the rows of all ranks (x: this rank's float32 [n, d]; ids: their global image ids, by default
    the ShardSampler layout): options.niter updates, then one assignment pass. The result does not depend on
    how the images are dealt to the ranks (up to float rounding of the reduced sums)."""
    opts = options if options is not None else KMeansOptions()
    start_time = time.perf_counter()
    info = info if info is not None else DistInfo()
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = strided_ids(x.shape[0], info) if ids is None else np.asarray(ids, np.int64)
    total = int(all_reduce_sum(torch.tensor([x.shape[0]], dtype=torch.int64), info).item())
    if k < 1 or k * opts.min_size > total:
        raise UserError(f"k-means with k={k} (at least {opts.min_size} each) needs at least {k * opts.min_size} "
                        f"images, got {total}; lower --k or use more images")
    if k == 1:  # nothing to optimise: one centroid, the mean
        mean = all_reduce_sum(torch.from_numpy(x.astype(np.float64).sum(0)), info).numpy() / total
        return KMeansResult(mean[None].astype(np.float32), np.zeros(x.shape[0], np.int64),
                            np.array([total], np.int64), [], time.perf_counter() - start_time)
    rng = np.random.default_rng(opts.seed)
    centroids = initial_centroids(x, ids, k, opts.seed, info)
    assigner = Assigner(opts.backend or choose_backend(opts.device), x.shape[1], opts.device)
    x_sq = np.einsum("ij,ij->i", x, x)  # the rows do not move: their norms once, not every pass
    losses = []
    for p in range(opts.niter + 1):
        assigner.set_centroids(centroids)
        dist2, labels = assigner.search(x, x_sq)
        counts = all_reduce_sum(torch.from_numpy(np.bincount(labels, minlength=k).astype(np.int64)), info).numpy()
        loss = all_reduce_sum(torch.tensor([float(dist2.sum(dtype=np.float64))], dtype=torch.float64), info)
        losses.append(loss.item() / total)
        if opts.log is not None:
            opts.log(f"k-means k={k} pass {p}/{opts.niter}: loss {losses[-1]:.5f}, empty {int((counts == 0).sum())}")
        if p == opts.niter:
            if opts.empty_rule == "published":  # published: the last pass splits too, and its labels move
                counts = split_like_published(centroids, counts, labels, ids, opts.world_id, info)
            break
        update_centroids(centroids, x, labels, counts, info)
        if opts.empty_rule == "published":
            split_like_published(centroids, counts, labels, ids, opts.world_id, info)
        else:
            split_empty_clusters(centroids, counts, rng)
    # under the published rule too: a donor it split down to nothing would stay empty there
    labels, counts = enforce_min_size(labels, counts, opts.min_size, rng, priority(ids, opts.seed + 1), info)
    return KMeansResult(centroids, labels, counts, losses, time.perf_counter() - start_time)


def update_centroids(centroids: np.ndarray, x: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                     info: DistInfo) -> None:
    """Each non-empty cluster's centroid becomes the mean of its rows over all ranks; in place."""
    sums = torch.zeros(centroids.shape[0], x.shape[1], dtype=torch.float32)
    sums.index_add_(0, torch.from_numpy(labels), torch.from_numpy(x))
    sums = all_reduce_sum(sums, info).numpy()
    filled = counts > 0
    centroids[filled] = sums[filled] / counts[filled, None]
