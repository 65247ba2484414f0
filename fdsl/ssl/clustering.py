"""One clustering round of DeeperCluster / DeepCluster / RotNet (docs/ssl.md):
features -> PCA whitening (fitted on a sample) -> L2 -> two-level k-means -> pseudo-labels for every image.

Before any work the round checks that k fits the data and estimates the memory it needs; each stage is timed
and logged. The round's result is archived as numpy files under <run_dir>/clusters/ (see docs/ssl.md):
  round-<epoch>.npz  super_labels, sub_labels, labels (= super * k_sub + sub) [N] int32, the centroids and
                     counts of both levels, dataset_indices, stage seconds, k-means losses, the NMIs
  pca-<epoch>.npz    mean, projection, eigenvalues, energy (fdsl.ssl.pca.PCA.load reads it)
  rounds.csv         one row per round: epoch, seconds per stage, PCA energy, NMIs
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from fdsl.engine.distributed import barrier
from fdsl.engine.features import extract, gather_in_order
from fdsl.errors import UserError
from fdsl.ssl.hierarchy import two_level
from fdsl.ssl.kmeans.search import choose_backend
from fdsl.ssl.pca import fit_pca

GiB = float(1 << 30)


@dataclass
class RoundConfig:
    k: int  # sub-clusters in all (k / nsc per super-cluster)
    nsc: int  # super-clusters
    dim_pca: int
    niter: int = 10
    pca_samples: int | None = None  # None: as published (pca_rows); a number: that many random images
    batch_size: int = 48
    workers: int = 4
    seed: int = 0
    use_faiss: bool = True
    empty_rule: str = "published"  # k-means empty clusters: "published" or "split" (fdsl.ssl.kmeans.empty)

    @property
    def k_sub(self) -> int:
        return self.k // self.nsc


@dataclass
class RoundResult:
    epoch: int
    super_labels: np.ndarray  # [N] int64, dataset order
    sub_labels: np.ndarray
    seconds: dict
    labels: np.ndarray  # super * k_sub + sub
    nmi_previous: float | None
    nmi_classes: float | None


def round_path(run_dir: str, epoch: int, kind: str = "round") -> str:
    return os.path.join(run_dir, "clusters", f"{kind}-{epoch:04d}.npz")


def check_sizes(cfg: RoundConfig, num_images: int, feature_dim: int) -> None:
    if cfg.k < 1 or cfg.nsc < 1:
        raise UserError(f"--k {cfg.k} and the super-clusters ({cfg.nsc}) must be at least 1")
    if cfg.k % cfg.nsc:
        raise UserError(f"--k {cfg.k} is not a multiple of the {cfg.nsc} super-clusters; use a multiple of {cfg.nsc}")
    if cfg.nsc > num_images:
        raise UserError(f"the data set ({num_images} images) is too small for {cfg.nsc} super-clusters; "
                        "lower --super_classes")
    if cfg.k > num_images:
        raise UserError(f"--k {cfg.k} is larger than the data set ({num_images} images); lower --k to at most "
                        f"{num_images}")
    if cfg.dim_pca > feature_dim:
        raise UserError(f"--dim_pca {cfg.dim_pca} is above the feature size {feature_dim}; use --dim_pca "
                        f"{feature_dim} or less")


def estimate_bytes(cfg: RoundConfig, n_local: int, feature_dim: int) -> dict:
    """Peak host memory per process of each stage (features are float32, the PCA covariance float64)."""
    features = n_local * feature_dim * 4
    pca_rows = 0 if cfg.pca_samples is None else min(n_local, cfg.pca_samples)  # published: a view, no copy
    stages = {
        "features": 2 * features,  # the batches, then their concatenation
        "pca": features + pca_rows * feature_dim * 4 + 3 * feature_dim ** 2 * 8,
        "projection": features + n_local * cfg.dim_pca * 4,
        "k-means": n_local * cfg.dim_pca * 4 * 2 + 3 * max(cfg.k_sub, cfg.nsc) * cfg.dim_pca * 4 + n_local * 40,
    }
    return stages


def available_bytes() -> float | None:
    """MemAvailable of this machine divided among the processes of this node (launcher variables)."""
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        avail = float(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    for var in ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        if os.environ.get(var, "").isdigit():
            return avail / max(1, int(os.environ[var]))
    return avail


def check_memory(cfg: RoundConfig, n_local: int, feature_dim: int, log=print) -> None:
    stages = estimate_bytes(cfg, n_local, feature_dim)
    need = max(stages.values())
    detail = ", ".join(f"{name} {size / GiB:.2f}" for name, size in stages.items())
    avail = available_bytes()
    log(f"clustering memory per process: peak {need / GiB:.2f} GiB ({detail} GiB); "
        f"available {avail / GiB:.1f} GiB" if avail else f"clustering memory per process: peak {need / GiB:.2f} GiB")
    if avail is not None and need > avail:
        raise UserError(f"clustering {n_local} images per process needs about {need / GiB:.1f} GiB of memory "
                        f"({detail} GiB) but {avail / GiB:.1f} GiB is available; lower --dim_pca, --k or "
                        "--size_dataset, or use more processes")


def published_pca_rows(feature_dim: int, batch_size: int, world_size: int) -> int:
    """Rows per rank the published PCA is fitted on (distributed_kmeans.py:36-43): D(D - 1) / 2 images over
    all ranks (D the feature size: 8,386,560 for fc7), in whole batches of batch x world."""
    return int(feature_dim * (feature_dim - 1) / 2 / batch_size / world_size) * batch_size


def pca_rows(n_local: int, feature_dim: int, cfg: RoundConfig, info, epoch: int) -> slice | np.ndarray | None:
    """This rank's rows the PCA is fitted on (None: all of them). Published (pca_samples None): the first
    published_pca_rows of each rank's share (a slice: a view, no copy), capped by the share; with fdsl's
    strided shares that is the first D(D - 1) / 2 images of the data. A number: that many images at random,
    over all ranks (sorted row indices)."""
    if cfg.pca_samples is None:
        count = published_pca_rows(feature_dim, cfg.batch_size, info.world_size)
        return slice(0, count) if count < n_local else None
    rng = np.random.default_rng([cfg.seed, epoch, info.rank])
    per_rank = -(-cfg.pca_samples // info.world_size)
    return np.sort(rng.choice(n_local, per_rank, replace=False)) if per_rank < n_local else None


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(a, b))


def extract_features(trunk, dataset, cfg: RoundConfig, info, autocast=None, progress=True) -> torch.Tensor:
    """This rank's features (rows r, r + W, ... of the dataset), trunk in eval mode."""
    from fdsl.data.samplers import ShardSampler

    sampler = ShardSampler(len(dataset), info.world_size, info.rank)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        pin_memory=info.device.type == "cuda")
    was_training = trunk.training
    trunk.eval()
    try:
        feats, _ = extract(trunk, loader, info, autocast=autocast, progress=progress)
    finally:
        trunk.train(was_training)
    return feats


def run_round(trunk, dataset, cfg: RoundConfig, info, epoch: int, run_dir: str, feature_dim: int,
              class_labels: np.ndarray | None = None, previous: np.ndarray | None = None,
              dataset_indices: np.ndarray | None = None, autocast=None, log=print) -> RoundResult:
    """Cluster `dataset` (the clustering view) with `trunk`; every rank returns the full label vectors."""
    n = len(dataset)
    check_sizes(cfg, n, feature_dim)
    n_local = len(range(info.rank, n, info.world_size))
    check_memory(cfg, n_local, feature_dim, log)
    seconds = {}

    t0 = time.perf_counter()
    feats = extract_features(trunk, dataset, cfg, info, autocast, progress=info.is_main)
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = pca_rows(feats.shape[0], feature_dim, cfg, info, epoch)
    sample = feats if rows is None else feats[rows if isinstance(rows, slice) else torch.from_numpy(rows)]
    pca = fit_pca(sample, cfg.dim_pca, info, info.device)
    del sample
    whitened = pca.apply(feats, info.device)
    del feats
    seconds["pca"] = time.perf_counter() - t0
    log(f"clustering epoch {epoch}: {n} images, features {seconds['features']:.1f}s, PCA {feature_dim}->"
        f"{cfg.dim_pca} keeps {pca.energy:.1f}% of the energy ({seconds['pca']:.1f}s)")

    t0 = time.perf_counter()
    backend = choose_backend(info.device, cfg.use_faiss)
    tree = two_level(whitened, cfg.nsc, cfg.k_sub, cfg.niter, cfg.seed * 100003 + epoch, info, backend,
                     info.device, log=None, empty_rule=cfg.empty_rule)
    del whitened
    super_labels = gather_in_order(torch.from_numpy(tree.super_labels), info).numpy()
    sub_labels = gather_in_order(torch.from_numpy(tree.sub_labels), info).numpy()
    seconds["kmeans"] = time.perf_counter() - t0
    combined = super_labels * cfg.k_sub + sub_labels
    nmi_prev = nmi(previous, combined) if previous is not None and len(previous) == n else None
    nmi_cls = nmi(class_labels, combined) if class_labels is not None else None
    losses = {level: (v[-1] if v else 0.0) for level, v in tree.losses.items()}
    log(f"clustering epoch {epoch}: k-means ({backend}) {cfg.nsc} x {cfg.k_sub} clusters in {seconds['kmeans']:.1f}s, "
        f"loss {np.mean(list(losses.values())):.4f}, super-cluster sizes {tree.super_counts.tolist()[:16]}"
        + (f", NMI with previous round {nmi_prev:.4f}" if nmi_prev is not None else "")
        + (f", NMI with the class folders {nmi_cls:.4f}" if nmi_cls is not None else ""))
    if info.is_main:
        os.makedirs(os.path.join(run_dir, "clusters"), exist_ok=True)
        pca.save(round_path(run_dir, epoch, "pca"))
        save_round(round_path(run_dir, epoch), epoch=epoch, super_labels=super_labels, sub_labels=sub_labels,
                   labels=combined, super_centroids=tree.super_centroids, sub_centroids=tree.sub_centroids,
                   super_counts=tree.super_counts, sub_counts=tree.sub_counts,
                   dataset_indices=dataset_indices if dataset_indices is not None else np.arange(n),
                   seconds_features=seconds["features"], seconds_pca=seconds["pca"],
                   seconds_kmeans=seconds["kmeans"], pca_energy=pca.energy,
                   nmi_previous=np.nan if nmi_prev is None else nmi_prev,
                   nmi_classes=np.nan if nmi_cls is None else nmi_cls)
        append_csv(os.path.join(run_dir, "clusters", "rounds.csv"),
                   {"epoch": epoch, "images": n, "seconds_features": round(seconds["features"], 3),
                    "seconds_pca": round(seconds["pca"], 3), "seconds_kmeans": round(seconds["kmeans"], 3),
                    "pca_energy": round(pca.energy, 3), "kmeans_loss": round(float(np.mean(list(losses.values()))), 6),
                    "nmi_previous": "" if nmi_prev is None else round(nmi_prev, 6),
                    "nmi_classes": "" if nmi_cls is None else round(nmi_cls, 6)})
    barrier(info)
    return RoundResult(epoch, super_labels, sub_labels, seconds, combined, nmi_prev, nmi_cls)


def save_round(path: str, **arrays) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npz"
    out = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        out[key] = value.astype(np.int32) if key.endswith("labels") else value
    np.savez(tmp, **out)
    os.replace(tmp, path)


def load_round(path: str) -> dict:
    with np.load(path) as f:
        return {key: f[key] for key in f.files}


def append_csv(path: str, row: dict) -> None:
    """Append a row; a row of the same epoch (a round redone after a crash) replaces the old one."""
    rows = []
    if os.path.isfile(path):
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) != int(row["epoch"])]
    rows.append({k: str(v) for k, v in row.items()})
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)

