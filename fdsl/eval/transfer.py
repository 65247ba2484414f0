"""The HPT evaluation protocols as methods of the one engine loop: the linear probe and fine-tuning
(docs/hpt.md, "Evaluation protocols"), plus their evaluation pass (top-1/top-5, or per-class AUROC for
multi-label lists).

Linear probe: the backbone is frozen and kept in eval mode (BN statistics included); only a Linear(D, C)
head, initialised N(0, 0.01) with zero bias, trains on the pooled feature. Fine-tuning: backbone (plain BN,
train mode) and head both train; the head's lr is `head_lr_mult` (100) times the base lr.
Single-label lists train with cross-entropy, multi-label lists with BCE-with-logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from fdsl.engine.method import Method, StepOutput


def train_transform(size: int, mean, std) -> T.Compose:
    """RandomResizedCrop + flip + normalise with the dataset's mean/std."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(size: int, precrop: int, mean, std) -> T.Compose:
    """Resize(precrop) -> CenterCrop(size) -> normalise (256 / 224 published)."""
    return T.Compose([T.Resize(precrop), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


class Classifier(nn.Module):
    """backbone (pooled feature) -> Linear head. With `frozen`, the backbone has no trainable parameter and
    stays in eval mode whatever .train() is called with, and runs without autograd."""

    def __init__(self, backbone: nn.Module, num_classes: int, frozen: bool):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.frozen = frozen
        if frozen:
            for p in backbone.parameters():
                p.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                feats = self.backbone(images)
            return self.head(feats.float())
        return self.head(self.backbone(images))


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.dim() > 1:  # multi-label float vectors
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
    return F.cross_entropy(logits.float(), targets)


class LinearProbe(Method):
    name = "linear"

    def __init__(self, backbone: nn.Module, num_classes: int):
        self.module = Classifier(backbone, num_classes, frozen=True)

    def optimizer_params(self):
        return [{"params": list(self.module.head.parameters())}]

    def training_step(self, model, batch, ctx) -> StepOutput:
        images, targets = batch
        with ctx.autocast():
            loss = classification_loss(model(images), targets)
        return StepOutput(loss, images.shape[0])


class FineTune(Method):
    """`passes` counts forward passes (micro-batches); `after_forward(passes)` is called after each one, before
    its backward (a no-op here): the published fine-tune evaluated every 25 passes, between optimiser steps."""

    name = "finetune"

    def __init__(self, backbone: nn.Module, num_classes: int, head_lr_mult: float = 100.0):
        self.module = Classifier(backbone, num_classes, frozen=False)
        self.head_lr_mult = head_lr_mult
        self.passes = 0

    def optimizer_params(self):
        """Two groups; the protocol sets each group's lr to base lr x `lr_scale`."""
        return [{"params": list(self.module.backbone.parameters()), "lr_scale": 1.0},
                {"params": list(self.module.head.parameters()), "lr_scale": self.head_lr_mult}]

    def training_step(self, model, batch, ctx) -> StepOutput:
        images, targets = batch
        with ctx.autocast():
            loss = classification_loss(model(images), targets)
        self.passes += 1
        self.after_forward(self.passes)
        return StepOutput(loss, images.shape[0])

    def after_forward(self, passes: int) -> None:
        """Called after forward pass number `passes` of the run."""

    def state_dict(self) -> dict:
        return {"passes": self.passes}

    def load_state_dict(self, state: dict) -> None:
        self.passes = int(state.get("passes", 0))


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """top1 (and top5 with >= 5 classes) in percent; multi-label: per-class AUROC (percent) and their mean.
    A class whose targets have one value only has no AUROC: it is reported as None and left out of the mean
    (published: scored 0, which pulled the mean down)."""
    if targets.dim() > 1:
        from sklearn.metrics import roc_auc_score

        scores = torch.sigmoid(logits).numpy()
        truth = (targets > 0.5).numpy()
        per_class = []
        for c in range(truth.shape[1]):
            column = truth[:, c]
            per_class.append(100.0 * roc_auc_score(column, scores[:, c]) if 0 < column.sum() < len(column) else None)
        valid = [v for v in per_class if v is not None]
        out = {"auroc": sum(valid) / len(valid) if valid else None}
        out.update({f"auroc_{c}": v for c, v in enumerate(per_class)})
        return out
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices.eq(targets[:, None])
    out = {"top1": 100.0 * top[:, :1].any(1).float().mean().item()}
    if k == 5:
        out["top5"] = 100.0 * top.any(1).float().mean().item()
    return out


def headline(metrics: dict) -> float | None:
    """The one number of a metrics dict: top1, else the mean AUROC."""
    return metrics.get("top1", metrics.get("auroc"))
