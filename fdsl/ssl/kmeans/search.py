"""The nearest-centroid search of k-means (the E-step), four backends chosen by choose_backend.

On a GPU 'faiss-gpu' (GpuIndexFlatL2) when faiss has GPU support, else 'torch' (a chunked float32 GEMM on the
device); on a CPU 'blas', the same GEMM search in numpy's BLAS, over the chunks in parallel. On a CPU it needs
no faiss and keeps up with faiss.Kmeans and scikit-learn's Lloyd (docs/benchmarks.md); 'faiss' (IndexFlatL2
on the CPU) stays for comparison. k-means is written around a search rather than faiss.Kmeans because
faiss.Kmeans cannot reduce across processes.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from fdsl.errors import UserError

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
