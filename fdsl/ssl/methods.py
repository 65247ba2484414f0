"""The self-supervised methods `fdsl hpt pretrain --method NAME` trains, by name, as fdsl.data.registry holds
the databases.

Each entry is a `SelfSupervised` method class (fdsl.engine.method.Method) that builds itself from the typed
options of a pre-training stage (`PretrainOptions`) and says how the stage's budget counts (`budget`).

Adding a method: subclass `SelfSupervised` in a module of this package and add one line to `_ENTRIES`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, fields

import torch

from fdsl.engine.method import Method
from fdsl.errors import UserError

# name -> "module:Class"; modules are imported only when their method is used.
_ENTRIES = {
    "moco": "fdsl.ssl.moco:MoCo",
    "byol": "fdsl.ssl.byol:BYOL",
}


@dataclass(frozen=True)
class PretrainOptions:
    """What a method reads of a pre-training stage's options (fdsl.ssl.hpt.options.PRETRAIN has their help)."""

    iters: int = 5000  # the budget as named (<N>-iters)
    accum_steps: int = 1
    published_schedule: bool = True
    seed: int = 0
    queue_size: int = 65536  # MoCo
    moco_momentum: float = 0.999
    temperature: float = 0.2
    feat_dim: int = 128
    neck_hidden: int | None = None
    bn_group_size: int = 64
    byol_momentum: float = 0.99  # BYOL
    proj_dim: int = 256
    proj_hidden: int = 4096

    @classmethod
    def from_values(cls, values: dict) -> PretrainOptions:
        """The options among `values` (a stage's option values by name); the rest are ignored."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


class SelfSupervised(Method):
    """A method of `fdsl hpt pretrain`: `module.backbone` is the network being pre-trained."""

    syncs_bn = False  # whether the stage's --sync-bn applies (SyncBatchNorm across processes)

    @classmethod
    def from_options(cls, backbone: torch.nn.Module, options: PretrainOptions, global_batch: int,
                     local_batch: int) -> SelfSupervised:
        raise NotImplementedError

    @classmethod
    def budget(cls, options: PretrainOptions) -> tuple[int, int]:
        """(optimiser steps, forward passes per step the schedules count in) of `--iters N`: N steps, counted
        as steps."""
        return options.iters, 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled feature, for k-NN and linear probes."""
        return self.module.backbone(images)


def names() -> list[str]:
    return sorted(_ENTRIES)


def get(name: str) -> type[SelfSupervised]:
    """The method class registered under `name`."""
    if name not in _ENTRIES:
        raise UserError(f"--method {name!r}: choose one of {', '.join(names())}")
    module, cls = _ENTRIES[name].split(":")
    return getattr(importlib.import_module(module), cls)
