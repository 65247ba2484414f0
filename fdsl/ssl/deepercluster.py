"""DeeperCluster (Caron et al. 2019) as an engine Method; DeepCluster and RotNet are its special cases
(docs/ssl.md).

    DeepCluster    super_classes=1, rotnet=False   (nsc = 1: k clusters of all images)
    RotNet         super_classes=4, k=1, rotnet=True (the super-class head predicts the rotation)
    DeeperCluster  the rest: nsc = super_classes / 4 super-clusters with rotnet, each split into k / nsc

Every `reassignment` epochs the trunk's features are clustered (fdsl.ssl.clustering) and the heads are
re-initialised. One super-class head Linear(D, S) and the S sub-class heads, held as one tensor
[S, k / nsc, D] (S = 4 * nsc with rotnet, else nsc), read ReLU(trunk(x)); loss = CE(sub) + CE(super).

Differences from the published layout, on purpose: batches mix all (super-cluster, rotation) classes drawn
uniformly over pseudo-labels with a rotation per sample, so no rank is tied to a super-class and any world size
works (1 included); the heads are re-initialised in place (seeded by the round) with their optimiser state
cleared, so the one optimiser lives through the whole run.

Gradients as published. There, each (super-cluster, rotation) group's sub-class head was DDP over its own
group of ranks, so its gradient was the mean over that group's samples, while the trunk and the super-class
head (DDP over all ranks) got the mean over the whole batch. One cross-entropy mean over a mixed batch gives
the trunk that, but each sub-class head only n_g / N of its published gradient (about 1/S); so each head's
weight gradient is multiplied by N / n_g (counts over all ranks), and nothing else is.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fdsl.engine.method import Method, StepOutput
from fdsl.errors import UserError
from fdsl.ssl.clustering import RoundConfig, load_round, round_path, run_round

MODEL_SEED = 1993  # the published skeleton seed


@dataclass
class Layout:
    """How the pseudo-labels are organised, from the published flags."""

    k: int
    super_classes: int
    rotnet: bool

    @property
    def rotations(self) -> int:
        return 4 if self.rotnet else 1

    @property
    def nsc(self) -> int:
        """Super-clusters."""
        return self.super_classes // self.rotations

    @property
    def k_sub(self) -> int:
        return self.k // self.nsc

    @property
    def mode(self) -> str:
        if self.super_classes == 1 and not self.rotnet:
            return "DeepCluster"
        if self.rotnet and self.k == 1 and self.super_classes == 4:
            return "RotNet"
        return "DeeperCluster"

    def check(self) -> None:
        if self.super_classes < 1 or self.k < 1:
            raise UserError("--super_classes and --k must be at least 1")
        if self.rotnet and self.super_classes % 4:
            raise UserError(f"--rotnet true needs --super_classes a multiple of 4 (got {self.super_classes})")
        if self.k % self.nsc:
            raise UserError(f"--k {self.k} must be a multiple of the {self.nsc} super-clusters")


def published_epoch_images(num_images: int, layout: Layout, global_batch: int) -> int:
    """Images one epoch draws over all ranks, as published: main.py's check_parameters (utils.py:130-134)
    rounds the data set down to a multiple of batch x world, gives each training group size // nsc // 4
    images rounded down again to batch x world, and each of the `super_classes` groups draws that many
    (trainer.py:91-97). So an epoch is about the data set with rotnet (S = 4 nsc) and a quarter of it
    without; the rounding is per group, as published (31,216 steps of 48 x 64 at the paper's scale)."""
    share = num_images // global_batch * global_batch // layout.nsc // 4
    if share < global_batch <= num_images:
        raise UserError(f"--epoch_size published gives each of the {layout.super_classes} training groups "
                        f"{share} images ({num_images} // {layout.nsc} super-clusters // 4, as published), less "
                        f"than one global batch ({global_batch} = --batch_size x processes); lower --batch_size "
                        f"or pass --epoch_size data")
    return share // global_batch * global_batch * layout.super_classes


class ClusterHeads(nn.Module):
    """Trunk + super-class head + the S sub-class heads [S, k_sub, D] applied per sample group."""

    def __init__(self, trunk: nn.Module, num_features: int, super_classes: int, k_sub: int):
        super().__init__()
        self.trunk = trunk
        self.super_head = nn.Linear(num_features, super_classes)
        self.sub_weight = nn.Parameter(torch.empty(super_classes, k_sub, num_features))
        self.sub_bias = nn.Parameter(torch.empty(super_classes, k_sub))
        self.reset_heads(torch.Generator().manual_seed(MODEL_SEED), super_head=True)

    @torch.no_grad()
    def reset_heads(self, generator: torch.Generator, super_head: bool) -> None:
        """nn.Linear's default init (U(-1/sqrt(D), 1/sqrt(D))) from `generator`, in place."""
        bound = 1.0 / math.sqrt(self.sub_weight.shape[-1])
        params = [self.sub_weight, self.sub_bias] + ([self.super_head.weight, self.super_head.bias] if super_head else [])
        for p in params:
            p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))

    def head_parameters(self, super_head: bool) -> list[nn.Parameter]:
        return [self.sub_weight, self.sub_bias] + (list(self.super_head.parameters()) if super_head else [])

    def sub_logits(self, feats: torch.Tensor, groups: torch.Tensor,
                   head_grad_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of each sample's own sub-class head: samples sorted by group, one matmul per group.
        head_grad_scale [S]: multiplies the gradient that reaches head g's weight and bias (not the trunk's)."""
        if self.sub_weight.shape[0] == 1:
            return feats @ self.sub_weight[0].T + self.sub_bias[0]
        order = torch.argsort(groups)
        sizes = torch.bincount(groups, minlength=self.sub_weight.shape[0]).tolist()
        parts = [linear_scaled_weight_grad(chunk, self.sub_weight[g], self.sub_bias[g],
                                           None if head_grad_scale is None else head_grad_scale[g])
                 for g, chunk in enumerate(feats[order].split(sizes)) if sizes[g]]
        out = torch.empty((feats.shape[0], self.sub_weight.shape[1]), dtype=parts[0].dtype, device=feats.device)
        out[order] = torch.cat(parts)
        return out

    def forward(self, images: torch.Tensor, groups: torch.Tensor, head_grad_scale: torch.Tensor | None = None):
        feats = F.relu(self.trunk(images))
        return self.super_head(feats), self.sub_logits(feats, groups, head_grad_scale)


def linear_scaled_weight_grad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                              scale: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias, exactly; the gradients w.r.t. weight and bias are multiplied by `scale`, the
    gradient w.r.t. x is not. The weight path runs on a detached x and adds an exact zero to the value."""
    if scale is None:
        return F.linear(x, weight, bias)
    out = F.linear(x, weight.detach(), bias.detach())
    weight_path = F.linear(x.detach(), weight, bias)
    return out + (weight_path - weight_path.detach()) * scale


def head_grad_scale(groups: torch.Tensor, num_groups: int, info=None) -> torch.Tensor:
    """N / n_g per group g, counts over all ranks (0 for a group absent from the step): turns head g's share
    of the batch-mean gradient into the mean over its own samples, as the published per-group DDP did."""
    counts = torch.bincount(groups, minlength=num_groups).to(torch.float32)
    if info is not None and info.distributed and dist.is_initialized():
        dist.all_reduce(counts)
    total = counts.sum()
    return torch.where(counts > 0, total / counts.clamp(min=1), torch.zeros_like(counts))


class DeeperCluster(Method):
    name = "deepercluster"

    def __init__(self, trunk: nn.Module, layout: Layout, round_cfg: RoundConfig, cluster_view, train_dataset,
                 sampler, run_dir: str, info, reassignment: int = 3, weight_decay: float = 1e-5,
                 class_labels: np.ndarray | None = None, dataset_indices: np.ndarray | None = None,
                 seed: int = 0, log=print, published_checkpoint_freq: int | None = None):
        layout.check()
        self.layout = layout
        self.module = ClusterHeads(trunk, trunk.num_features, layout.super_classes, layout.k_sub)
        self.round_cfg = round_cfg
        self.cluster_view = cluster_view
        self.train_dataset = train_dataset
        self.sampler = sampler
        self.run_dir = run_dir
        self.info = info
        self.reassignment = max(1, reassignment)
        self.weight_decay = weight_decay
        self.class_labels = class_labels
        self.dataset_indices = dataset_indices
        self.seed = seed
        self.log = log
        self.published_checkpoint_freq = published_checkpoint_freq  # None: no published-layout files
        self.optimizer = None  # set by the caller, so heads re-created after a round lose their momentum
        self.round_epoch: int | None = None  # epoch whose clustering the heads were trained on
        self.labels: np.ndarray | None = None  # combined labels of the current round, in memory
        self.round_stats: dict = {}  # NMIs of the current round, repeated in every epoch's summary row

    # --- what the engine calls -------------------------------------------------------------------------
    def optimizer_params(self):
        """SGD over every trainable tensor with the same weight decay (published: biases and BN included)."""
        return [{"params": [p for p in self.module.parameters() if p.requires_grad],
                 "weight_decay": self.weight_decay}]

    def training_step(self, model, batch, ctx) -> StepOutput:
        device = ctx.info.device
        images, super_t, sub_t = (t.to(device, non_blocking=True) for t in batch)
        scale = head_grad_scale(super_t, self.layout.super_classes, ctx.info) if self.layout.super_classes > 1 else None
        with ctx.autocast():
            super_logits, sub_logits = model(images, super_t, scale)
        super_logits, sub_logits = super_logits.float(), sub_logits.float()
        loss_super = F.cross_entropy(super_logits, super_t)
        loss_sub = F.cross_entropy(sub_logits, sub_t)
        with torch.no_grad():
            ok_super = super_logits.argmax(1) == super_t
            ok_sub = sub_logits.argmax(1) == sub_t
        logs = {"loss_super": loss_super.detach(), "loss_sub": loss_sub.detach(),
                "prec": 100.0 * (ok_super & ok_sub).float().mean(), "prec_super": 100.0 * ok_super.float().mean(),
                "prec_sub": 100.0 * ok_sub.float().mean()}
        return StepOutput(loss_super + loss_sub, images.shape[0], logs)

    def round_of(self, epoch: int) -> int:
        return epoch - epoch % self.reassignment

    def before_epoch(self, epoch: int, ctx=None) -> None:
        """Start a round when the epoch begins one (or load it after a resume); give the data its labels."""
        start = self.round_of(epoch)
        if self.round_epoch == start and self.labels is not None:
            return
        if self.round_epoch == start:  # resumed in the middle of a round: same labels, heads from the checkpoint
            self._load_labels(start)
            return
        with torch.random.fork_rng(devices=[]):  # clustering must not shift the training randomness
            path = round_path(self.run_dir, start)
            if self.labels is None and self.round_epoch is not None:  # resumed: the previous round, for its NMI
                self._load_labels(self.round_epoch)
            if os.path.isfile(path):  # clustered before a crash; the file is the same result
                self._load_labels(start)
            else:
                self._cluster(start, ctx)
        self._reset_heads(start, ctx)
        self.round_epoch = start

    def _cluster(self, start: int, ctx) -> None:
        result = run_round(self.module.trunk, self.cluster_view, self.round_cfg, self.info, start, self.run_dir,
                           self.module.trunk.num_features, self.class_labels, previous=self.labels,
                           dataset_indices=self.dataset_indices, autocast=getattr(ctx, "autocast", None),
                           log=self._log0)
        self._set_labels(result.super_labels, result.sub_labels)
        self.round_stats = {"nmi_previous": float("nan") if result.nmi_previous is None else result.nmi_previous}
        if self.class_labels is not None:
            self.round_stats["nmi_classes"] = result.nmi_classes

    def after_epoch(self, epoch: int, ctx=None) -> dict:
        """The same columns every epoch: the round's start and its NMIs (per-stage times: clusters/rounds.csv).
        Rank 0 also writes the published checkpoint layout (fdsl.ssl.published_ckpt) when asked."""
        if self.published_checkpoint_freq and self.info.is_main:
            from fdsl.ssl.published_ckpt import write_published

            write_published(self.run_dir, self.module, self.optimizer, epoch + 1,
                            archive=epoch % self.published_checkpoint_freq == 0)
        return {"cluster_round": self.round_epoch, **self.round_stats}

    def state_dict(self) -> dict:
        return {"round_epoch": -1 if self.round_epoch is None else self.round_epoch}

    def load_state_dict(self, state: dict) -> None:
        value = int(state.get("round_epoch", -1))
        self.round_epoch = None if value < 0 else value
        self.labels = None

    # --- helpers --------------------------------------------------------------------------------------
    def _log0(self, message: str) -> None:
        if self.info.is_main:
            self.log(message)

    def _set_labels(self, super_labels: np.ndarray, sub_labels: np.ndarray) -> None:
        self.train_dataset.set_labels(super_labels, sub_labels)
        self.labels = super_labels * self.layout.k_sub + sub_labels
        self.sampler.set_labels(self.labels)

    def _load_labels(self, start: int) -> None:
        path = round_path(self.run_dir, start)
        if not os.path.isfile(path):
            raise UserError(f"resuming in the round of epoch {start} needs {path}; it is missing, so restart "
                            "from the checkpoint of the epoch before that round")
        saved = load_round(path)
        self.round_stats = {"nmi_previous": float(saved["nmi_previous"])}
        if self.class_labels is not None:
            self.round_stats["nmi_classes"] = float(saved["nmi_classes"])
        if len(saved["super_labels"]) != len(self.cluster_view):
            raise UserError(f"{path} holds {len(saved['super_labels'])} assignments but the data has "
                            f"{len(self.cluster_view)} images; resume with the same data and --size_dataset")
        self._set_labels(saved["super_labels"].astype(np.int64), saved["sub_labels"].astype(np.int64))

    def _reset_heads(self, start: int, ctx) -> None:
        """New heads for new clusters (the super-class head only when the super-clusters changed, nsc > 1:
        the RotNet head persists, as published); the optimiser forgets their momentum."""
        super_too = self.layout.nsc > 1
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + start + 1)
        self.module.reset_heads(generator, super_too)
        optimizer = self.optimizer or getattr(ctx, "optimizer", None)
        if optimizer is not None:
            for p in self.module.head_parameters(super_too):
                optimizer.state.pop(p, None)
