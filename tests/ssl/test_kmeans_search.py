"""k-means backends: the chunked GEMM searches ('blas', the CPU default, and 'torch') against faiss and a
float64 reference, one faiss GPU resource per process (a fake faiss module counts them), and feature
extraction's reused host buffers."""
import types

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fdsl.engine.distributed import DistInfo
from fdsl.engine.features import HostCopies, extract
from fdsl.errors import UserError
from fdsl.ssl.kmeans import search
from fdsl.ssl.kmeans.driver import KMeansOptions, kmeans


def float64_nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((x.astype(np.float64)[:, None, :] - c.astype(np.float64)[None]) ** 2).sum(-1)
    return d.min(1), d.argmin(1)


def test_gemm_search_matches_faiss_and_float64_over_chunks(monkeypatch, one_thread):
    rng = np.random.default_rng(3)
    x, c = rng.normal(size=(1000, 24)).astype(np.float32), rng.normal(size=(37, 24)).astype(np.float32)
    monkeypatch.setattr(search, "CPU_CHUNK_BYTES", 4 * 37 * 300)  # 300 rows a chunk: 4 chunks, the last one short
    ref_d, ref_l = float64_nearest(x, c)
    for backend, threads in (("blas", 1), ("blas", 3), ("torch", 1), ("faiss", 1)):
        torch.set_num_threads(threads)  # 'blas': 3 workers over the 4 chunks
        a = search.Assigner(backend, 24)
        a.set_centroids(c)
        d, labels = a.search(x)
        assert labels.dtype == np.int64 and np.array_equal(labels, ref_l), backend
        assert np.allclose(d, ref_d, rtol=1e-4, atol=1e-4), backend
        assert a.search(x[:0])[1].shape == (0,)
    torch.set_num_threads(1)


def test_kmeans_torch_backend_gives_the_faiss_result(one_thread):
    rng = np.random.default_rng(4)
    centres = rng.normal(scale=4, size=(12, 8))
    x = (centres[rng.integers(0, 12, 3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    results = {b: kmeans(x, 20, KMeansOptions(niter=6, seed=1, backend=b)) for b in ("blas", "torch", "faiss")}
    ours, ref = results["blas"], results["faiss"]
    assert np.array_equal(results["torch"].labels, ref.labels)
    assert np.array_equal(ours.labels, ref.labels) and np.array_equal(ours.counts, ref.counts)
    assert np.allclose(ours.centroids, ref.centroids, atol=1e-5)
    assert np.allclose(ours.losses, ref.losses, rtol=1e-5)
    assert ours.losses[-1] < ours.losses[0]


def test_cpu_k_means_needs_no_faiss(monkeypatch, one_thread):
    monkeypatch.setattr(search, "faiss_module", lambda: None)
    assert search.choose_backend("cpu") == search.choose_backend("cpu", use_faiss=False) == "blas"
    x = np.repeat(np.eye(4, dtype=np.float32), 10, 0)
    res = kmeans(x, 4, KMeansOptions(niter=3))  # the default backend on a CPU
    assert sorted(res.counts.tolist()) == [10, 10, 10, 10]
    with pytest.raises(UserError, match="'faiss' needs faiss; pip install faiss-cpu"):
        search.Assigner("faiss", 4)
    with pytest.raises(UserError, match="unknown k-means backend .gemm."):
        search.Assigner("gemm", 4)


def fake_faiss():
    """What Assigner uses of faiss-gpu, with a count of the StandardGpuResources made."""
    made = []

    class StandardGpuResources:
        def __init__(self):
            made.append(self)

    class GpuIndexFlatL2:
        def __init__(self, resources, dim, cfg):
            self.resources, self.dim, self.device = resources, dim, cfg.device

    module = types.SimpleNamespace(StandardGpuResources=StandardGpuResources, GpuIndexFlatL2=GpuIndexFlatL2,
                                   GpuIndexFlatConfig=lambda: types.SimpleNamespace(device=None),
                                   get_num_gpus=lambda: 1)
    return module, made


def test_one_faiss_gpu_resource_per_process(monkeypatch):
    module, made = fake_faiss()
    monkeypatch.setattr(search, "faiss_module", lambda: module)
    monkeypatch.setattr(search, "_gpu_resources", None)
    assert search.choose_backend("cuda:0") == "faiss-gpu" and search.choose_backend("cuda:0", use_faiss=False) == "torch"
    indexes = [search.Assigner("faiss-gpu", 16, torch.device("cuda", i % 2)).index for i in range(3)]
    assert len(made) == 1 and all(ix.resources is made[0] for ix in indexes)
    assert [ix.device for ix in indexes] == [0, 1, 0]


@pytest.mark.skipif(not (torch.cuda.is_available() and search.faiss_has_gpu()), reason="needs CUDA and faiss-gpu")
def test_faiss_gpu_k_means_reuses_its_resource_and_matches_the_cpu():
    x = np.random.default_rng(5).normal(size=(2000, 16)).astype(np.float32)
    first = kmeans(x, 10, KMeansOptions(niter=4, backend="faiss-gpu", device="cuda"))
    resources = search.gpu_resources()
    again = kmeans(x, 10, KMeansOptions(niter=4, backend="faiss-gpu", device="cuda"))
    assert search.gpu_resources() is resources and np.array_equal(first.labels, again.labels)
    assert np.array_equal(first.labels, kmeans(x, 10, KMeansOptions(niter=4, backend="blas")).labels)


def test_host_copies_reuse_two_buffers_and_keep_every_row():
    copies = HostCopies(torch.device("cpu"))
    batches = [torch.arange(i * 15, i * 15 + 15, dtype=torch.float32).reshape(5, 3) for i in range(6)]
    batches.append(torch.full((2, 3), -1.0))  # a short last batch
    seen = set()
    for b in batches:
        copies.push(b)
        seen.update(buf.data_ptr() for buf in copies.buffers if buf is not None)
        b.fill_(99)  # the caller's tensor may be reused as soon as push returns
    out = copies.finish()
    assert len(seen) == 2 and copies.buffers == [None, None]
    assert torch.equal(torch.cat(out[:6]), torch.arange(90, dtype=torch.float32).reshape(30, 3))
    assert torch.equal(out[6], torch.full((2, 3), -1.0))


def test_extract_returns_the_features_in_order(one_thread):
    data = TensorDataset(torch.randn(23, 4), torch.arange(23))
    feats, labels = extract(lambda x: x * 2, DataLoader(data, batch_size=5), DistInfo())
    assert torch.equal(feats, data.tensors[0] * 2) and torch.equal(labels, torch.arange(23))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_extract_leaves_no_pinned_copy_of_the_features():
    data = TensorDataset(torch.randn(4096, 8), torch.zeros(4096, dtype=torch.long))
    linear = torch.nn.Linear(8, 1024).cuda()
    torch.cuda.synchronize()
    before = torch.cuda.host_memory_stats().get("allocated_bytes.allocated", 0)  # pinned bytes ever created
    feats, _ = extract(linear, DataLoader(data, batch_size=64), DistInfo(device=torch.device("cuda")))
    assert feats.shape == (4096, 1024) and not feats.is_pinned()
    grown = torch.cuda.host_memory_stats().get("allocated_bytes.allocated", 0) - before
    assert grown <= 4 * 64 * 1024 * 4  # two batch buffers (rounded up by the allocator), not 16 MiB of features
