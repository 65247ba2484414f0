"""Shuffle-BN (MoCo, He et al. 2020) and its one-process emulation.

On W processes, BatchNorm statistics are per process: the query encoder's BN sees the local batch, and the
key images are shuffled across all processes before the key encoder so that a query and its positive key
never share BN statistics (otherwise the network "cheats" through the batch statistics).

One process behaves like many: `GroupBatchNorm` computes statistics over G equal chunks of the batch, as if
each chunk were on its own GPU. Combined with the same global shuffle, a laptop run with batch 256 in 4 BN
groups is the published 4-GPU x 64 run. The permutation is drawn from a generator seeded by (seed, step),
so every rank draws the same one without a broadcast, and a resumed run draws the same ones again.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class GroupBatchNorm(nn.BatchNorm2d):
    """BatchNorm (any input rank) whose training statistics are computed per chunk of `groups` equal chunks
    of the batch. Running statistics are the mean over the chunks. groups=1 is plain BatchNorm; the state
    dict is BatchNorm2d's, so checkpoints stay torchvision-compatible."""

    groups: int = 1

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        if g == 1 or not self.training:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % g:
            raise ValueError(f"batch of {n} does not split into {g} BN groups")
        rest = x.shape[2:]
        grouped = x.reshape(g, n // g, c, *rest).transpose(0, 1).reshape(n // g, g * c, *rest)
        factor = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if factor is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        mean = self.running_mean.repeat(g) if self.track_running_stats else None
        var = self.running_var.repeat(g) if self.track_running_stats else None
        weight = self.weight.repeat(g) if self.affine else None
        bias = self.bias.repeat(g) if self.affine else None
        out = F.batch_norm(grouped, mean, var, weight, bias, True, factor or 0.0, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(g, c).mean(0))
                self.running_var.copy_(var.view(g, c).mean(0))
        return out.reshape(n // g, g, c, *rest).transpose(0, 1).reshape(n, c, *rest)


def convert_group_bn(module: nn.Module) -> nn.Module:
    """Replace every plain BatchNorm1d/2d by a GroupBatchNorm with the same state (groups=1 until set)."""
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d):
        new = GroupBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new = convert_group_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


def set_bn_groups(module: nn.Module, groups: int) -> None:
    for m in module.modules():
        if isinstance(m, GroupBatchNorm):
            m.groups = groups


def bn_groups(local_batch: int, group_size: int | None) -> int:
    """How many BN groups one process's batch splits into for `group_size` images per group (None: one)."""
    if not group_size or group_size >= local_batch:
        return 1
    if local_batch % group_size:
        raise ValueError(f"batch {local_batch} per process is not a multiple of the BN group size {group_size}")
    return local_batch // group_size


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenation of `x` from every rank, rank order (no gradient)."""
    size = world()[1]
    if size == 1:
        return x
    chunks = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(chunks, x.contiguous())
    return torch.cat(chunks)


_WORD = 0xFFFFFFFF


def _hash32(x):
    """A bijection of 32-bit values (xor-shift and odd multiplier rounds) of a Python int or an int64 tensor,
    exact on any device: every product stays below 2**63."""
    for multiplier in (0x7FEB352D, 0x5BD1E995):
        x = x ^ (x >> 16)
        x = (x * multiplier) & _WORD
    return x ^ (x >> 15)


def permutation(n: int, seed: int, step: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The same random permutation of range(n) on every rank and every device, a pure function of (seed, step):
    the order of hashed indices. Computed where the images are, so a step copies nothing from the host (a
    host-drawn randperm would be one blocking host-to-GPU copy per MoCo step)."""
    offset = _hash32(((seed * 1_000_003 + step) & _WORD) ^ 0x9E3779B9)  # the constant: no fixed point at 0
    keys = _hash32((torch.arange(n, device=device, dtype=torch.int64) + offset) & _WORD)
    return torch.argsort(keys)  # distinct keys: a bijection of distinct inputs


@torch.no_grad()
def encode_shuffled(encoder: nn.Module, images: torch.Tensor, seed: int, step: int,
                    shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of this rank's images, encoded after a shuffle of the global batch across ranks (and across the
    BN groups inside each rank). Returns (local keys [n, D], keys of the whole global batch [W*n, D], in
    global batch order) so the caller can enqueue without another gather. On one process with one BN group
    a shuffle changes nothing, and `shuffle=False` skips it."""
    rank, size = world()
    n = images.shape[0]
    if size == 1 and not shuffle:
        keys = encoder(images)
        return keys, keys
    everything = all_gather_cat(images)
    perm = permutation(n * size, seed, step, images.device)
    mine = perm[rank * n:(rank + 1) * n]
    keys = encoder(everything[mine])
    shuffled = all_gather_cat(keys)
    ordered = torch.empty_like(shuffled)
    ordered[perm] = shuffled
    return ordered[rank * n:(rank + 1) * n], ordered
