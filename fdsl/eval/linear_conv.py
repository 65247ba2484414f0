"""Linear probes on frozen conv features (docs/ssl.md, eval_linear.py): the trunk's k-th conv activation
(VGG16 conv1..conv13, or a timm trunk's pooled feature), average-pooled to fewer than 10k dimensions, then
one linear layer trained with SGD and Bottou's decay lr_t = lr0 / sqrt(1 + lr0 * wd * t).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fdsl.models.vgg import conv_output_sides

MAX_DIM = 10_000
# The published pool per conv (for 224-px crops, i.e. 226-px inputs to the body).
PUBLISHED_POOL = {1: 18, 2: 18, 3: 14, 4: 14, 5: 9, 6: 9, 7: 9, 8: 6, 9: 6, 10: 6, 11: 3, 12: 3, 13: 3}


def pool_size(conv: int, channels: int, side: int) -> int:
    """The published pool where the feature map has the published side; else the smallest pool that brings
    channels x (side // pool)^2 under 10k."""
    if side == conv_output_sides(224)[conv - 1] and channels * (side // PUBLISHED_POOL[conv]) ** 2 < MAX_DIM:
        return PUBLISHED_POOL[conv]
    pool = 1
    while channels * (side // pool) ** 2 >= MAX_DIM:
        pool += 1
    return pool


class ConvProbe(nn.Module):
    """Frozen trunk (always in eval mode) -> conv tap -> AvgPool -> flatten -> Linear."""

    def __init__(self, trunk: nn.Module, num_classes: int, conv: int | None = None):
        super().__init__()
        self.trunk = trunk
        self.conv = conv
        for p in trunk.parameters():
            p.requires_grad = False
        if conv is not None:
            channels, side = trunk.conv_channels(conv), trunk.conv_side(conv)
            k = pool_size(conv, channels, side)
            self.pool = nn.AvgPool2d(k, stride=k)
            dim = channels * (side // k) ** 2
        else:
            self.pool = nn.Identity()
            dim = trunk.num_features
        self.dim = dim
        self.linear = nn.Linear(dim, num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()
        return self

    def features(self, x):
        with torch.no_grad():
            f = self.trunk.forward_conv(x, self.conv) if self.conv is not None else self.trunk(x)
            return torch.flatten(self.pool(f), 1)

    def forward(self, x):
        return self.linear(self.features(x))


class BottouSchedule:
    """lr_t = lr0 / sqrt(1 + lr0 * wd * t), t = the global iteration (the loop's update count)."""

    per_iteration = True

    def __init__(self, optimizer, lr: float, weight_decay: float):
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.after_update(0)

    def lr_at(self, t: int) -> float:
        return self.lr / np.sqrt(1 + self.lr * self.weight_decay * t)

    def after_update(self, num_updates: int, metric: float | None = None) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(num_updates)

    def after_epoch(self, epoch: int, metric: float | None = None) -> None:
        pass

    def fast_forward(self, start_epoch: int, num_updates: int = 0) -> None:
        self.after_update(num_updates)

    def state_dict(self):
        return None

    def load_state_dict(self, state) -> None:
        pass


class StepDecay:
    """lr halved (gamma) every `step` updates: eval_voc_classif's schedule; also eval_pretrain's x0.1 / 30 epochs
    when step is counted in epochs (per_iteration False)."""

    def __init__(self, optimizer, lr: float, step: int, gamma: float = 0.5, per_iteration: bool = True):
        self.optimizer = optimizer
        self.lr, self.step, self.gamma = lr, step, gamma
        self.per_iteration = per_iteration
        self._set(0)

    def _set(self, count: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * self.gamma ** (count // self.step)

    def after_update(self, num_updates: int, metric: float | None = None) -> None:
        if self.per_iteration:
            self._set(num_updates)

    def after_epoch(self, epoch: int, metric: float | None = None) -> None:
        if not self.per_iteration:
            self._set(epoch + 1)

    def fast_forward(self, start_epoch: int, num_updates: int = 0) -> None:
        self._set(num_updates if self.per_iteration else start_epoch)

    def state_dict(self):
        return None

    def load_state_dict(self, state) -> None:
        pass


def kfold_split(targets, folds: int, fold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices shuffled, validation indices in order): each class's indices cut into `folds` contiguous
    chunks of len // folds (the remainder dropped, as published); chunk `fold` of every class validates."""
    targets = np.asarray(targets)
    if not 0 <= fold < folds:
        raise ValueError(f"--cross_valid {fold} must be in 0..{folds - 1}")
    train, val = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        size = len(idx) // folds
        for f in range(folds):
            (val if f == fold else train).append(idx[f * size:(f + 1) * size])
    train_idx = np.concatenate(train) if train else np.zeros(0, np.int64)
    val_idx = np.concatenate(val) if val else np.zeros(0, np.int64)
    return np.random.default_rng(seed).permutation(train_idx), np.sort(val_idx)


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).float().mean().item() if labels.numel() else 0.0
