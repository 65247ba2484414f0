"""Per-channel pixel mean and std of an image set, as HPT's compute-dataset-pixel-mean-std (docs/hpt.md):
every image at its own size (no resize), values in 0-1; per image the channel means of x and of x^2;
mean = E[mean_img], std = sqrt(E[mean(x^2)_img] - mean^2). Each image counts once, whatever its size."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler


class PixelMoments(Dataset):
    """Item i: float64 [2, 3] = (channel means, channel means of squares) of image i."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as img:
            x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        x = x.reshape(-1, 3)
        return torch.from_numpy(np.stack([x.mean(0), (x * x).mean(0)]).astype(np.float64))


def mean_std(paths: list[str], workers: int = 8, batch_size: int = 256, num_batches: int = -1, seed: int = 0,
             progress: bool = True) -> dict:
    """{'mean', 'var', 'std' (lists of 3), 'images'}; num_batches > 0 samples that many shuffled batches."""
    ds = PixelMoments(paths)
    sampler = None
    total = len(ds)
    if num_batches > 0:
        total = min(len(ds), num_batches * batch_size)
        sampler = RandomSampler(ds, num_samples=total, generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers)
    sums = torch.zeros(2, 3, dtype=torch.float64)
    seen = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", desc="mean-std")
    for batch in loader:
        sums += batch.sum(0)
        seen += batch.shape[0]
        if bar is not None:
            bar.update(batch.shape[0])
    if bar is not None:
        bar.close()
    mean = sums[0] / max(seen, 1)
    var = (sums[1] / max(seen, 1) - mean * mean).clamp_min(0)
    return {"mean": mean.tolist(), "var": var.tolist(), "std": var.sqrt().tolist(), "images": seen}
