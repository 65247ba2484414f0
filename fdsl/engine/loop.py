"""The one training loop (after FAIR MAE's engine_pretrain.py) and the evaluation pass.

No per-step host sync: the loss is summed on the device and read only at log steps and at epoch end, which
is also where a non-finite loss is detected (all ranks agree through the all-reduce).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.models import model_parameters
from timm.utils import dispatch_clip_grad

from fdsl.engine import distributed
from fdsl.engine.logging import StepTimer, format_eta, print0


class NonFiniteLoss(Exception):
    pass


@dataclass
class LoopContext:
    info: distributed.DistInfo
    amp_dtype: torch.dtype | None = None  # None: full precision
    scaler: torch.amp.GradScaler | None = None
    mixup_fn: object = None
    clip_grad: float | None = None
    clip_mode: str = "norm"
    log_interval: int = 50
    channels_last: bool = False
    ema: object = None
    trackers: object = None
    on_step: object = None  # callback(epoch, batch_idx) for recovery checkpoints
    save_images_dir: str | None = None  # --save-images: rank 0 writes train-batch-<idx>.jpg at log steps
    epochs: int = 1
    extra: dict = field(default_factory=dict)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)


def _to_device(images, targets, ctx: LoopContext):
    device = ctx.info.device
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    if ctx.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def train_one_epoch(model, loader, optimizer, loss_fn, schedule, ctx: LoopContext, epoch: int,
                    mixup_active: bool = True) -> dict:
    model.train()
    info = ctx.info
    steps = len(loader)
    loss_sum = torch.zeros((), device=info.device)
    seen = 0
    timer = StepTimer()
    for batch_idx, (images, targets) in enumerate(loader):
        images, targets = _to_device(images, targets, ctx)
        if ctx.mixup_fn is not None and mixup_active:
            images, targets = ctx.mixup_fn(images, targets)
        with ctx.autocast():
            loss = loss_fn(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        params = lambda: model_parameters(model, exclude_head=ctx.clip_mode == "agc")
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
            if ctx.clip_grad is not None:
                ctx.scaler.unscale_(optimizer)
                dispatch_clip_grad(params(), ctx.clip_grad, mode=ctx.clip_mode)
            ctx.scaler.step(optimizer)
            ctx.scaler.update()
        else:
            loss.backward()
            if ctx.clip_grad is not None:
                dispatch_clip_grad(params(), ctx.clip_grad, mode=ctx.clip_mode)
            optimizer.step()
        if ctx.ema is not None:
            ctx.ema.update(model)
        loss_sum += loss.detach()
        seen += 1
        num_updates = epoch * steps + batch_idx + 1
        if batch_idx % ctx.log_interval == 0 or batch_idx == steps - 1:
            _log_step(ctx, epoch, batch_idx, steps, loss, optimizer, images.shape[0], timer, num_updates)
            if ctx.save_images_dir and info.is_main:
                _save_batch(images, ctx.save_images_dir, batch_idx)
        if ctx.on_step is not None:
            ctx.on_step(epoch, batch_idx)
        schedule.after_update(num_updates)
    mean = distributed.all_reduce_mean(loss_sum / max(seen, 1), info).item()
    if not math.isfinite(mean):
        raise NonFiniteLoss(f"train loss is {mean} in epoch {epoch}")
    return {"loss": mean}


def _log_step(ctx, epoch, batch_idx, steps, loss, optimizer, batch_size, timer, num_updates) -> None:
    info = ctx.info
    value = distributed.all_reduce_mean(loss.detach().float(), info).item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"loss is {value} at epoch {epoch} step {batch_idx}")
    if not info.is_main:
        return
    intervals = max(1, batch_idx - ctx.extra.get("last_logged", -1)) if batch_idx > 0 else 1
    ctx.extra["last_logged"] = batch_idx
    per_step = timer.lap() / intervals
    lr = sum(g["lr"] for g in optimizer.param_groups) / len(optimizer.param_groups)
    remaining = (steps - batch_idx - 1) + (ctx.epochs - epoch - 1) * steps
    print0(info, f"train: epoch {epoch} [{batch_idx + 1:>4d}/{steps}] loss {value:.4f} lr {lr:.3e} "
                 f"{batch_size * info.world_size / max(per_step, 1e-9):.1f} img/s ETA {format_eta(remaining * per_step)}")
    if ctx.trackers is not None:
        ctx.trackers.log({"iter": num_updates, "lr": lr, "train_loss_step": value}, step=num_updates)


def _save_batch(images, folder: str, batch_idx: int) -> None:
    import os

    from torchvision.utils import save_image

    os.makedirs(folder, exist_ok=True)
    save_image(images.detach().float().cpu(), os.path.join(folder, f"train-batch-{batch_idx}.jpg"), padding=0,
               normalize=True)


@torch.no_grad()
def evaluate(model, loader, ctx: LoopContext, num_classes: int) -> dict:
    model.eval()
    info = ctx.info
    topk = 5 if num_classes >= 5 else 1
    totals = torch.zeros(4, device=info.device, dtype=torch.float64)  # loss sum, top1, top5, count
    for images, targets in loader:
        images, targets = _to_device(images, targets, ctx)
        with ctx.autocast():
            logits = model(images)
        logits = logits.float()
        totals[0] += F.cross_entropy(logits, targets, reduction="sum")
        correct = logits.topk(topk, dim=1).indices.eq(targets[:, None])
        totals[1] += correct[:, :1].sum()
        totals[2] += correct.any(dim=1).sum()
        totals[3] += targets.numel()
    totals = distributed.all_reduce_sum(totals, info)
    count = max(totals[3].item(), 1)
    metrics = {"loss": totals[0].item() / count, "top1": 100.0 * totals[1].item() / count}
    if topk == 5:
        metrics["top5"] = 100.0 * totals[2].item() / count
    return metrics
