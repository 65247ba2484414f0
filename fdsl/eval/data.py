"""Loaders and transforms of the evaluation protocols (docs/ssl.md): a training loader that resumes
exactly (engine's Resumable sampler + per-sample seeding), an evaluation pass gathered in dataset order on
every rank, and the published crops (RandomResizedCrop + flip to train, Resize(256) + CenterCrop(224) to
test, TenCrop or 10 random crops for VOC), scaled for other image sizes."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms as T

from fdsl.data.samplers import Resumable, Seeded, ShardSampler
from fdsl.engine.data import TrainLoader
from fdsl.engine.features import extract, gather_in_order
from fdsl.errors import UserError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def resize_side(size: int) -> int:
    return round(size * 256 / 224)


def train_transform(size: int):
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])


def eval_transform(size: int):
    return T.Compose([T.Resize(resize_side(size)), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def ten_crop_transform(size: int):
    """[10, C, H, W]: the four corners and the centre, and their mirror images."""
    norm = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    return T.Compose([T.Resize(resize_side(size)), T.TenCrop(size), T.Lambda(lambda crops: torch.stack(
        [norm(c) for c in crops]))])


def train_loader(dataset, batch_size: int, workers: int, info, seed: int) -> TrainLoader:
    """Shuffled per (seed, epoch), drop_last, every sample's augmentation seeded by its position."""
    sampler = Resumable(DistributedSampler(dataset, info.world_size, info.rank, shuffle=True, seed=seed), seed,
                        info.rank)
    if len(sampler) < batch_size:
        raise UserError(f"--batch_size {batch_size} is larger than the {len(sampler)} training images per process; "
                        "lower --batch_size")
    loader = DataLoader(Seeded(dataset), batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=workers, pin_memory=info.device.type == "cuda")
    return TrainLoader(loader, sampler, batch_size)


class Epochs:
    """What fit tells about epochs: the sampler's epoch."""

    def __init__(self, loader: TrainLoader):
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.sampler.set_epoch(epoch)


@torch.no_grad()
def predict(model, dataset, batch_size: int, workers: int, info, autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs [N, ...], targets [N, ...]) of the whole dataset, in dataset order on every rank. Items whose
    image is [K, C, H, W] (ten crops) have the K outputs summed."""
    sampler = ShardSampler(len(dataset), info.world_size, info.rank)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=info.device.type == "cuda")
    was_training = getattr(model, "training", None)  # a module (toggled to eval) or a plain function
    if was_training is not None:
        model.eval()
    targets = []

    def forward(images):
        if images.dim() == 5:  # [B, K, C, H, W]: sum over the K crops
            b, k = images.shape[:2]
            return model(images.flatten(0, 1)).float().view(b, k, -1).sum(1)
        return model(images)

    class Targets:  # extract() flattens labels; keep each item's target tensor whole
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            for images, target in self.inner:
                targets.append(torch.as_tensor(target))
                yield images, torch.zeros(images.shape[0], dtype=torch.long)

    try:
        outputs, _ = extract(forward, Targets(loader), info, autocast=autocast)
    finally:
        if was_training is not None:
            model.train(was_training)
    local_targets = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
    if outputs.numel() == 0:
        outputs = outputs.reshape(0, 0)
    return gather_in_order(outputs, info), gather_in_order(local_targets, info)


class Picked(Dataset):
    """dataset[indices[i]]. Not torch's Subset: its batched __getitems__ would be forwarded through the engine's
    Seeded wrapper and receive (index, seed) pairs."""

    def __init__(self, dataset, indices: np.ndarray):
        self.dataset = dataset
        self.indices = np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]


def subset(dataset, indices: np.ndarray) -> Picked:
    return Picked(dataset, indices)
