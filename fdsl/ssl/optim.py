"""Optimisers of the contrastive methods: SGD (MoCo, probes) and LARS (BYOL).

LARS is timm's `Lars`: trust ratio eta * |w| / (|g| + wd * |w|), applied only in parameter groups whose weight
decay is non-zero. The published `lars_exclude` groups (BN/GN weights and biases, all biases) therefore
become one group with weight_decay 0: no decay and no adaptation (local lr 1), exactly the published rule.
Excluded here by module type, not by the published name regex, which missed the BN weights named
`downsample.1` in torchvision ResNets.

One difference from OpenSelfSup's LARS: timm keeps the momentum buffer in gradient units and multiplies by
the lr at the update (PyTorch SGD), OpenSelfSup multiplied by the lr before the buffer (Caffe SGD); the two
agree whenever the lr is constant and differ only in how fast a changed lr takes effect.
"""
from __future__ import annotations

import torch
from torch import nn

from fdsl.errors import UserError

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def split_decay(module: nn.Module, weight_decay: float) -> list[dict]:
    """[{decayed weights, weight_decay}, {norm-layer parameters and biases, weight_decay 0}], trainable only."""
    decay, no_decay = [], []
    seen = set()
    for mod in module.modules():
        for name, param in mod.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if isinstance(mod, NORM_TYPES) or name == "bias" else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    lars_eta: float = 0.001) -> torch.optim.Optimizer:
    """`sgd` or `lars`. `params` is a module (LARS: split into decayed and excluded groups), a list of tensors
    or a list of param-group dicts."""
    if name == "lars":
        from timm.optim import Lars

        groups = split_decay(params, weight_decay) if isinstance(params, nn.Module) else params
        return Lars(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coeff=lars_eta)
    if name == "sgd":
        if isinstance(params, nn.Module):
            params = [p for p in params.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise UserError(f"--optimizer {name!r}: choose sgd or lars")
