"""PCA whitening of DeepCluster/DeeperCluster (docs/ssl.md): centre, project on the top eigenvectors of
the covariance, scale by eigenvalue^-0.5 (eigenvalues floored at max * 1e-5), then L2-normalise each row.

Written by hand (a few lines of torch) because faiss' PCAMatrix has no eigenvalue floor and scikit-learn's
PCA cannot be fitted across processes. The fit is distributed: every rank contributes a random sample of its
own rows through all-reduced sums, so no rank gathers the others' features (the published code gathered the
whole sample on rank 0 and pickled the result for the other ranks).

Saved as .npz (numpy-readable): mean [D], projection [D, d], eigenvalues [d] (floored, kept), energy (%).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from fdsl.errors import UserError

EIGEN_FLOOR = 1e-5
CHUNK = 65536


@dataclass
class PCA:
    mean: np.ndarray  # [D] float32
    projection: np.ndarray  # [D, d] float32: eigenvectors scaled by eigenvalue^-0.5
    eigenvalues: np.ndarray  # [d] float64, floored
    energy: float  # % of the total variance kept by the d components

    @property
    def dim(self) -> int:
        return self.projection.shape[1]

    def apply(self, x: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> np.ndarray:
        """Whitened, L2-normalised rows as float32 numpy [N, d], computed chunk by chunk on `device`."""
        x_t = torch.as_tensor(x)
        out = np.empty((x_t.shape[0], self.dim), dtype=np.float32)
        mean = torch.from_numpy(self.mean).to(device)
        proj = torch.from_numpy(self.projection).to(device)
        for start in range(0, x_t.shape[0], CHUNK):
            chunk = x_t[start:start + CHUNK].to(device, torch.float32)
            y = torch.nn.functional.normalize((chunk - mean) @ proj, dim=1)
            out[start:start + CHUNK] = y.cpu().numpy()
        return out

    def save(self, path: str) -> None:
        tmp = f"{path}.tmp{os.getpid()}.npz"
        np.savez(tmp, mean=self.mean, projection=self.projection, eigenvalues=self.eigenvalues,
                 energy=np.float64(self.energy))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> PCA:
        with np.load(path) as f:
            return cls(f["mean"], f["projection"], f["eigenvalues"], float(f["energy"]))


def _all_reduce(t: torch.Tensor, info) -> torch.Tensor:
    if info is not None and info.distributed:
        on_gpu = dist.get_backend() == "nccl"
        moved = t.to(info.device) if on_gpu else t
        dist.all_reduce(moved)
        t = moved.cpu() if on_gpu else moved
    return t


def fit_pca(sample: np.ndarray | torch.Tensor, dim: int, info=None, device: torch.device | str = "cpu") -> PCA:
    """Fit on this rank's `sample` rows [n, D] (all ranks together when distributed)."""
    x = torch.as_tensor(sample)
    n_features = x.shape[1]
    if dim > n_features:
        raise UserError(f"--dim_pca {dim} is larger than the feature size {n_features}; use --dim_pca {n_features} "
                        "or less")
    n = _all_reduce(torch.tensor([float(x.shape[0])], dtype=torch.float64), info).item()
    if n < 2:
        raise UserError("PCA needs at least 2 images")
    total = torch.zeros(n_features, dtype=torch.float64)
    for start in range(0, x.shape[0], CHUNK):
        total += x[start:start + CHUNK].to(device, torch.float64).sum(0).cpu()
    mean = _all_reduce(total, info) / n
    mean32 = mean.float().to(device)
    cov = torch.zeros(n_features, n_features, dtype=torch.float64)
    for start in range(0, x.shape[0], CHUNK):
        c = x[start:start + CHUNK].to(device, torch.float32) - mean32
        cov += (c.T @ c).double().cpu()  # float32 products, float64 accumulation
    cov = _all_reduce(cov, info) / n
    values, vectors = torch.linalg.eigh(cov.to(device))  # ascending
    values, vectors = values.flip(0).cpu(), vectors.flip(1).cpu()
    values = values.clamp(min=values[0].item() * EIGEN_FLOOR)
    kept = values[:dim]
    energy = 100.0 * kept.sum().item() / values.sum().item()
    projection = (vectors[:, :dim] / kept.sqrt()).float().numpy()
    return PCA(mean.float().numpy(), projection, kept.numpy(), energy)
