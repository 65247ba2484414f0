"""Clustering pieces of DeeperCluster: PCA whitening, k-means (empty clusters, sizes), the two-level hierarchy,
and the uniform-over-clusters sampler (two gloo processes: tests/ssl/test_deepercluster.py)."""
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import normalized_mutual_info_score

from fdsl.engine.distributed import DistInfo
from fdsl.errors import UserError
from fdsl.ssl.hierarchy import two_level
from fdsl.ssl.kmeans.driver import KMeansOptions, kmeans
from fdsl.ssl.kmeans.empty import enforce_min_size, split_empty_clusters
from fdsl.ssl.kmeans.ids import priority
from fdsl.ssl.pca import PCA, fit_pca
from fdsl.ssl.sampler import UniformClusterSampler


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def test_pca_whitens_known_data(tmp_path):
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 1e-9])  # the last direction is (almost) empty: floored
    x = (rng.normal(size=(20000, 6)) * scales) @ basis.T + 7.0
    pca = fit_pca(x.astype(np.float32), 3)
    assert np.allclose(pca.mean, 7.0, atol=0.1)
    assert np.allclose(np.sqrt(pca.eigenvalues), scales[:3], rtol=0.05)
    assert 100 * (25 + 9 + 4) / (scales ** 2).sum() == pytest.approx(pca.energy, rel=0.02)
    y = (x - pca.mean) @ pca.projection  # whitened before L2: unit variance, uncorrelated
    assert np.allclose(np.cov(y.T), np.eye(3), atol=0.05)
    z = pca.apply(x)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    full = fit_pca(x.astype(np.float32), 6)
    assert full.eigenvalues.min() == pytest.approx(full.eigenvalues.max() * 1e-5)  # floor
    pca.save(str(tmp_path / "pca.npz"))
    again = PCA.load(str(tmp_path / "pca.npz"))
    assert np.array_equal(again.projection, pca.projection) and again.energy == pca.energy
    with pytest.raises(UserError, match="--dim_pca 7 is larger"):
        fit_pca(x.astype(np.float32), 7)


def test_kmeans_on_digits_finds_the_classes(digits):
    x, y = digits
    z = fit_pca(x, 16).apply(x)
    res = kmeans(z, 10, KMeansOptions(niter=20, seed=0))
    assert normalized_mutual_info_score(y, res.labels) > 0.6
    assert res.losses[-1] < res.losses[0]
    assert res.counts.sum() == len(x) and np.array_equal(np.bincount(res.labels, minlength=10), res.counts)


def test_kmeans_never_returns_an_empty_cluster():
    """5 distinct points repeated 20 times, k = 30: most centroids start as duplicates and go empty."""
    x = np.repeat(np.random.default_rng(1).random((5, 4)).astype(np.float32), 20, 0)
    for k in (7, 30, 100):
        res = kmeans(x, k, KMeansOptions(niter=5, seed=k))
        assert res.counts.min() >= 1 and np.array_equal(np.bincount(res.labels, minlength=k), res.counts)
    with pytest.raises(UserError, match="needs at least 101 images"):
        kmeans(x, 101)


def test_each_empty_cluster_splits_a_different_donor():
    counts = np.array([0, 0, 0, 50, 40, 30, 0, 0])
    centroids = np.arange(8 * 4, dtype=np.float32).reshape(8, 4) + 1
    before = centroids.copy()
    split_empty_clusters(centroids, counts, np.random.default_rng(0))
    changed_donors = [m for m in (3, 4, 5) if not np.allclose(centroids[m], before[m])]
    assert len(changed_donors) == 3  # 5 empties, 3 donors: each used once per pass, then again
    assert all(not np.allclose(centroids[e], before[e]) for e in (0, 1, 2, 6, 7))
    labels = np.repeat(np.arange(8), [0, 0, 0, 50, 40, 30, 0, 0])
    labels, new = enforce_min_size(labels, np.bincount(labels, minlength=8), 1, np.random.default_rng(0),
                                   priority(np.arange(120), 0), DistInfo())
    assert new.min() >= 1 and np.array_equal(np.bincount(labels, minlength=8), new)


def test_two_level_labels_are_consistent(digits):
    x, y = digits
    z = fit_pca(x, 24).apply(x)
    tree = two_level(z, nsc=3, k_sub=200, niter=5, seed=0)
    assert tree.super_counts.min() >= 200  # every super-cluster can hold its sub-clusters
    assert tree.sub_counts.min() >= 1 and tree.sub_counts.sum() == len(x)
    for c in range(3):
        in_c = tree.super_labels == c
        assert np.array_equal(np.bincount(tree.sub_labels[in_c], minlength=200), tree.sub_counts[c])
    combined = tree.combined()
    assert len(np.unique(combined)) == 600
    assert normalized_mutual_info_score(y, tree.super_labels) > 0.15  # random labels: ~0.002


def test_sampler_is_uniform_over_clusters_and_a_function_of_seed_and_epoch():
    labels = np.repeat(np.arange(4), [1000, 100, 10, 2])
    labels[::97] = -1  # unlabelled images are never drawn
    s = UniformClusterSampler(labels, 800, num_replicas=2, rank=0, seed=5, rotations=4)
    s.set_epoch(3)
    order = s.global_order()
    idx, rot = np.divmod(order, 4)
    assert len(order) == 800 and (labels[idx] >= 0).all()
    per_label = np.bincount(labels[idx], minlength=4)
    assert per_label.min() >= 195 and per_label.max() <= 201
    assert np.bincount(rot, minlength=4).min() > 150
    big = idx[labels[idx] == 0]
    assert len(np.unique(big)) == len(big)  # drawn without replacement from a large cluster
    again = UniformClusterSampler(labels, 800, 2, 0, 5, 4)
    again.set_epoch(3)
    assert np.array_equal(again.global_order(), order)
    other = UniformClusterSampler(labels, 800, 2, 1, 5, 4)
    other.set_epoch(3)
    assert sorted(list(s) + list(other)) == sorted(order.tolist())
    again.set_epoch(4)
    assert not np.array_equal(again.global_order(), order)
    s.set_start(100)
    assert list(s) == order[0::2][100:].tolist() and len(s) == 300


def test_torch_search_matches_faiss():
    from fdsl.ssl.kmeans.search import Assigner

    rng = np.random.default_rng(2)
    x, c = rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(20, 16)).astype(np.float32)
    results = []
    for backend in ("faiss", "torch"):
        a = Assigner(backend, 16, "cpu")
        a.set_centroids(c)
        results.append(a.search(x))
    assert np.array_equal(results[0][1], results[1][1])
    assert np.allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-4)


def test_clustering_refuses_what_cannot_fit_in_memory(monkeypatch):
    from fdsl.ssl import clustering

    cfg = clustering.RoundConfig(k=320_000, nsc=4, dim_pca=4096)
    stages = clustering.estimate_bytes(cfg, 3_000_000, 4096)
    assert stages["features"] == 2 * 3_000_000 * 4096 * 4  # 92 GiB of float32 features, twice at the concat
    monkeypatch.setattr(clustering, "available_bytes", lambda: 64 * 2 ** 30)
    with pytest.raises(UserError, match=r"needs about 95\.3 GiB of memory \(features 91\.55, .* but 64\.0 GiB is available"):
        clustering.check_memory(cfg, 3_000_000, 4096, log=lambda m: None)
    clustering.check_memory(cfg, 100_000, 4096, log=lambda m: None)  # 3 GiB: fine


def test_flat_folders_have_no_class_labels(tmp_path):
    from PIL import Image

    from fdsl.ssl.data import SourceSpec, build_source

    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    source, labels, _ = build_source(SourceSpec(data_path=str(tmp_path)))
    assert len(source) == 3 and labels is None
