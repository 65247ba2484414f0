"""Distributed k-means over the rows each rank holds (spec ssl.md A.5).

Each pass: every rank assigns its rows to the nearest centroid, per-cluster counts and sums are all-reduced,
and the centroids become the means. The last pass only assigns (niter + 1 passes). Any world size works,
1 included; every rank computes the same centroids from the same reduced sums.

The nearest-centroid search (the E-step, nearly all of the time) has four backends, chosen by
choose_backend: on a GPU 'faiss-gpu' (GpuIndexFlatL2) when faiss has GPU support, else 'torch' (a chunked
float32 GEMM on the device); on a CPU 'blas', the same GEMM search in numpy's BLAS, over the chunks in
parallel. On a CPU it needs no faiss and keeps up with faiss.Kmeans and scikit-learn's Lloyd
(docs/benchmarks.md); 'faiss' (IndexFlatL2 on the CPU) stays for comparison.
Written around a search rather than faiss.Kmeans because faiss.Kmeans cannot reduce across processes.

Empty clusters, fixed from the published rule (which re-seeded before every pick, so all empties of a pass
split the same cluster): each empty cluster takes a *different* non-empty donor, drawn with probability
proportional to its size; the donor's centroid is split in two by a small relative perturbation (faiss'
rule). After the last pass, a cluster still empty takes half of its donor's points, so no cluster is ever
returned empty. `min_size` generalises this (the super-clusters of DeeperCluster need k / nsc points each).
`empty_rule="published"` keeps the published rule instead (split_like_published).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from fdsl.errors import UserError

SPLIT_EPS = 1.0 / 1024.0  # faiss' relative perturbation when it splits a cluster
GPU_CHUNK_BYTES = 256 << 20  # the score block of one GEMM on a GPU
CPU_CHUNK_BYTES = 8 << 20  # on a CPU: a block that stays in the last-level cache for the argmax
BACKENDS = ("blas", "torch", "faiss", "faiss-gpu")


def faiss_module():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def faiss_has_gpu() -> bool:
    faiss = faiss_module()
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


_gpu_resources = None


def gpu_resources():
    """One faiss StandardGpuResources per process, made on first use. Each one allocates its own scratch
    memory on the GPU, outside torch's caching allocator: made per k-means call (1 + nsc calls a round) it
    re-allocated that memory every time, next to the blocks torch keeps cached."""
    global _gpu_resources
    if _gpu_resources is None:
        _gpu_resources = faiss_module().StandardGpuResources()
    return _gpu_resources


def choose_backend(device: torch.device | str = "cpu", use_faiss: bool = True) -> str:
    """'faiss-gpu' on a GPU when faiss has GPU support (and use_faiss), 'torch' on other GPUs, 'blas' on a CPU."""
    if torch.device(device).type != "cuda":
        return "blas"
    return "faiss-gpu" if use_faiss and faiss_has_gpu() else "torch"


_blas_controller = None


def one_blas_thread():
    """numpy's BLAS held to one thread (the search runs its own threads over chunks), or None without
    threadpoolctl (a scikit-learn dependency)."""
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


class Assigner:
    """Nearest centroid (squared L2) of each row: set_centroids once per pass, then search.

    'blas' and 'torch' score a chunk of rows by one GEMM, <x, c> - |c|^2 / 2, and take the argmax: the
    nearest centroid, with |x|^2 - 2 max its squared distance. 'blas' (a CPU) runs numpy's BLAS on one thread
    per worker, torch.get_num_threads() workers over the chunks (the argmax runs in parallel too); each
    worker's score block stays in the cache."""

    def __init__(self, backend: str, dim: int, device: torch.device | str = "cpu"):
        if backend not in BACKENDS:
            raise UserError(f"unknown k-means backend {backend!r}; use one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.device = torch.device(device)
        self.dim = dim
        faiss = faiss_module()
        if backend.startswith("faiss") and faiss is None:
            raise UserError(f"the k-means backend {backend!r} needs faiss; pip install faiss-cpu (or fdsl[gpu] "
                            "for faiss-gpu), or use the 'blas' or 'torch' backend")
        self.index = None
        if backend == "faiss":
            self.index = faiss.IndexFlatL2(dim)
        elif backend == "faiss-gpu":
            cfg = faiss.GpuIndexFlatConfig()
            cfg.device = self.device.index or 0
            self.index = faiss.GpuIndexFlatL2(gpu_resources(), dim, cfg)
        self.blocks: dict[int, tuple] = {}  # 'blas': each worker's reused [chunk, d + 1] rows, [chunk, k] scores

    def set_centroids(self, centroids: np.ndarray) -> None:
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if self.index is not None:
            self.index.reset()
            self.index.add(centroids)
        elif self.backend == "blas":  # [c, -|c|^2 / 2]: rows [x, 1] get the score from the GEMM alone
            self.centroids = np.concatenate([centroids, -0.5 * np.einsum("ij,ij->i", centroids, centroids)[:, None]],
                                            axis=1)
        else:
            self.centroids = torch.from_numpy(centroids).to(self.device)
            self.half_sq_norms = -0.5 * (self.centroids ** 2).sum(1)

    def search(self, x: np.ndarray, x_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(squared distances float32 [n], labels int64 [n]); x_sq: the rows' squared norms, if known."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self.index is not None:
            dist2, labels = self.index.search(x, 1)
            return dist2[:, 0], labels[:, 0].astype(np.int64, copy=False)
        x_sq = np.einsum("ij,ij->i", x, x) if x_sq is None else x_sq
        dist2, labels = np.empty(x.shape[0], np.float32), np.empty(x.shape[0], np.int64)
        (self._search_blas if self.backend == "blas" else self._search_torch)(x, x_sq, dist2, labels)
        np.maximum(dist2, 0, out=dist2)
        return dist2, labels

    def _search_blas(self, x, x_sq, dist2, labels) -> None:
        k = self.centroids.shape[0]
        chunk = max(1, CPU_CHUNK_BYTES // (4 * k))
        starts = list(range(0, x.shape[0], chunk))
        workers = min(torch.get_num_threads(), len(starts))
        limit = one_blas_thread()
        if limit is None:  # the BLAS threads cannot be held to one: let it use its own, one worker
            workers = 1

        def run(worker: int) -> None:
            rows_max = min(chunk, x.shape[0])
            if worker not in self.blocks or self.blocks[worker][0].shape[0] < rows_max:
                augmented = np.ones((rows_max, x.shape[1] + 1), np.float32)  # [x, 1], the 1s written once
                self.blocks[worker] = (augmented, np.empty((rows_max, k), np.float32))
            augmented, block = self.blocks[worker]
            for start in starts[worker::workers]:
                m = min(chunk, x.shape[0] - start)
                rows = slice(start, start + m)
                augmented[:m, :-1] = x[rows]  # a copy of the chunk costs less than a pass over its scores
                s = block[:m]
                np.matmul(augmented[:m], self.centroids.T, out=s)  # <x, c> - |c|^2 / 2
                s.argmax(1, out=labels[rows])
                dist2[rows] = x_sq[rows] - 2 * s[np.arange(m), labels[rows]]

        try:
            if workers == 1:
                run(0)
            else:
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(run, range(workers)))
        finally:
            if limit is not None:
                limit.restore_original_limits()

    def _search_torch(self, x, x_sq, dist2, labels) -> None:
        k = self.centroids.shape[0]
        chunk = max(1, (CPU_CHUNK_BYTES if self.device.type == "cpu" else GPU_CHUNK_BYTES) // (4 * k))
        scores = torch.empty(min(chunk, x.shape[0]), k, device=self.device)
        for start in range(0, x.shape[0], chunk):
            xc = torch.from_numpy(x[start:start + chunk]).to(self.device)
            rows = slice(start, start + xc.shape[0])
            s = torch.addmm(self.half_sq_norms, xc, self.centroids.T, out=scores[:xc.shape[0]])
            best, idx = s.max(1)
            labels[rows] = idx.cpu().numpy()
            dist2[rows] = x_sq[rows] - 2 * best.cpu().numpy()


# --- collectives on numpy/torch values (gloo on CPU, NCCL through the device) ---------------------------

def _distributed(info) -> bool:
    return info is not None and info.distributed and dist.is_initialized()


def all_reduce(t: torch.Tensor, info) -> torch.Tensor:
    if not _distributed(info):
        return t
    if dist.get_backend() == "nccl":
        moved = t.to(info.device)
        dist.all_reduce(moved)
        return moved.to(t.device)
    dist.all_reduce(t)
    return t


def all_gather_rows(t: torch.Tensor, info) -> torch.Tensor:
    """[W, *t.shape]: every rank's t (same shape on every rank)."""
    if not _distributed(info):
        return t[None]
    src = t.to(info.device) if dist.get_backend() == "nccl" else t
    out = [torch.empty_like(src) for _ in range(info.world_size)]
    dist.all_gather(out, src)
    return torch.stack(out).to(t.device)


# --- k-means ---------------------------------------------------------------------------------------------

@dataclass
class KMeansResult:
    centroids: np.ndarray  # [k, d] float32 (from the last update, as published: not re-normalised)
    labels: np.ndarray  # [n_local] int64, this rank's rows
    counts: np.ndarray  # [k] int64, over all ranks; never below min_size
    losses: list[float] = field(default_factory=list)  # mean squared distance per pass
    seconds: float = 0.0


def priority(ids: np.ndarray, seed: int) -> np.ndarray:
    """A pseudo-random non-negative int64 per global image id (SplitMix64 of id and seed): the same for an
    image whichever rank holds it, so choices by smallest priority do not depend on the world size."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids).astype(np.uint64) + np.uint64(seed % (1 << 63)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return ((z ^ (z >> np.uint64(31))) >> np.uint64(1)).astype(np.int64)


def smallest_over_ranks(values: np.ndarray, count: int, info) -> np.ndarray:
    """The `count` smallest of all ranks' int64 values, sorted (fewer if there are fewer)."""
    local = np.full(count, -1, np.int64)
    mine = np.sort(values)[:count]
    local[:mine.size] = mine
    everyone = all_gather_rows(torch.from_numpy(local), info).numpy().ravel()
    return np.sort(everyone[everyone >= 0])[:count]


def initial_centroids(x: np.ndarray, ids: np.ndarray, k: int, seed: int, info) -> np.ndarray:
    """The k images of smallest priority over all ranks, in priority order (each row sent by its owner)."""
    prio = priority(ids, seed)
    chosen = smallest_over_ranks(prio, k, info)
    slot = np.searchsorted(chosen, prio)
    mine = np.flatnonzero((slot < chosen.size) & (chosen[np.minimum(slot, chosen.size - 1)] == prio))
    centroids = torch.zeros(k, x.shape[1], dtype=torch.float32)
    centroids[torch.from_numpy(slot[mine])] = torch.from_numpy(x[mine])
    return all_reduce(centroids, info).numpy()


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
                         world_id: int, info) -> np.ndarray:
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
    return all_reduce(torch.from_numpy(np.bincount(labels, minlength=counts.size).astype(np.int64)), info).numpy()


def enforce_min_size(labels: np.ndarray, counts: np.ndarray, min_size: int, rng: np.random.Generator,
                     prio: np.ndarray, info) -> tuple[np.ndarray, np.ndarray]:
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


def strided_ids(n_local: int, info) -> np.ndarray:
    """Dataset indices of this rank's rows under samplers.ShardSampler (rank r holds r, r + W, ...)."""
    if not _distributed(info):
        return np.arange(n_local, dtype=np.int64)
    return info.rank + info.world_size * np.arange(n_local, dtype=np.int64)


def kmeans(x: np.ndarray, k: int, niter: int = 10, seed: int = 0, info=None, min_size: int = 1,
           backend: str | None = None, device: torch.device | str = "cpu", ids: np.ndarray | None = None,
           log=None, empty_rule: str = "split", world_id: int = 0) -> KMeansResult:
    """k-means of the rows of all ranks (x: this rank's float32 [n, d]; ids: their global image ids, by default
    the ShardSampler layout); niter updates, then one assignment pass. The result does not depend on how the
    images are dealt to the ranks (up to float rounding of the reduced sums). backend: see choose_backend
    (its choice for `device` when None). empty_rule: "split" (fdsl) or "published" (split_like_published,
    seeded by world_id)."""
    start_time = time.perf_counter()
    x = np.ascontiguousarray(x, dtype=np.float32)
    ids = strided_ids(x.shape[0], info) if ids is None else np.asarray(ids, np.int64)
    total = int(all_reduce(torch.tensor([x.shape[0]], dtype=torch.int64), info).item())
    if k < 1 or k * min_size > total:
        raise UserError(f"k-means with k={k} (at least {min_size} each) needs at least {k * min_size} images, "
                        f"got {total}; lower --k or use more images")
    if k == 1:  # nothing to optimise: one centroid, the mean
        mean = all_reduce(torch.from_numpy(x.astype(np.float64).sum(0)), info).numpy() / total
        return KMeansResult(mean[None].astype(np.float32), np.zeros(x.shape[0], np.int64),
                            np.array([total], np.int64), [], time.perf_counter() - start_time)
    rng = np.random.default_rng(seed)
    centroids = initial_centroids(x, ids, k, seed, info)
    assigner = Assigner(backend or choose_backend(device), x.shape[1], device)
    x_t = torch.from_numpy(x)
    x_sq = np.einsum("ij,ij->i", x, x)  # the rows do not move: their norms once, not every pass
    losses = []
    for p in range(niter + 1):
        assigner.set_centroids(centroids)
        dist2, labels = assigner.search(x, x_sq)
        counts = all_reduce(torch.from_numpy(np.bincount(labels, minlength=k).astype(np.int64)), info).numpy()
        loss = all_reduce(torch.tensor([float(dist2.sum(dtype=np.float64))], dtype=torch.float64), info).item()
        losses.append(loss / total)
        if log is not None:
            log(f"k-means k={k} pass {p}/{niter}: loss {losses[-1]:.5f}, empty {int((counts == 0).sum())}")
        if p == niter:
            if empty_rule == "published":  # published: the last pass splits too, and its labels move
                counts = split_like_published(centroids, counts, labels, ids, world_id, info)
            break
        sums = torch.zeros(k, x.shape[1], dtype=torch.float32)
        sums.index_add_(0, torch.from_numpy(labels), x_t)
        sums = all_reduce(sums, info).numpy()
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if empty_rule == "published":
            split_like_published(centroids, counts, labels, ids, world_id, info)
        else:
            split_empty_clusters(centroids, counts, rng)
    # under the published rule too: a donor it split down to nothing would stay empty there
    labels, counts = enforce_min_size(labels, counts, min_size, rng, priority(ids, seed + 1), info)
    return KMeansResult(centroids, labels, counts, losses, time.perf_counter() - start_time)
