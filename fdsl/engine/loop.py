"""The one training loop (after FAIR MAE's engine_pretrain.py) and the evaluation pass.

Every method (supervised classification, DeeperCluster, MoCo v2, BYOL) runs through `train_one_epoch`: the
method turns a batch into a loss (fdsl.engine.method), the loop does the rest. No per-step host sync: the
loss is summed on the device and read only at log steps and at epoch end, which is also where a non-finite
loss is detected (all ranks agree through the all-reduce).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models import model_parameters
from timm.utils import dispatch_clip_grad

from fdsl.engine import distributed
from fdsl.engine.logging import StepTimer, format_eta, print0
from fdsl.engine.method import Method


class NonFiniteLoss(Exception):
    pass



def amp_setup(enabled: bool, dtype_name: str, info) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype, grad scaler) of --amp on info.device; LoopContext.autocast autocasts on that device.
    bfloat16 needs no scaler and runs on CUDA and CPU alike (the weights stay float32); float16 needs a
    GradScaler, CUDA only: on a CPU it falls back to float32 with a note. Off: (None, None)."""
    if not enabled:
        return None, None
    if dtype_name == "bfloat16":
        return torch.bfloat16, None
    if info.device.type != "cuda":
        print0(info, f"note: --amp with float16 needs CUDA; float32 on {info.device.type} "
                     "(--amp-dtype bfloat16 autocasts there too)")
        return None, None
    return torch.float16, torch.amp.GradScaler("cuda")

@dataclass
class LoopContext:
    info: distributed.DistInfo
    amp_dtype: torch.dtype | None = None  # None: full precision
    scaler: torch.amp.GradScaler | None = None
    clip_grad: float | None = None
    clip_mode: str = "norm"
    accum_steps: int = 1  # micro-batches per optimiser step (gradient accumulation)
    max_updates: int | None = None  # stop the epoch once the run has made this many optimiser steps
    log_interval: int = 50
    channels_last: bool = False
    ema: object = None
    trackers: object = None
    on_update: object = None  # callback(epoch, step_in_epoch, num_updates) -> bool (True: stop now)
    save_images_dir: str | None = None  # --save-images: rank 0 writes train-batch-<idx>.jpg at log steps
    epochs: int = 1

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=self.amp_dtype)


def to_device(batch, ctx: LoopContext):
    """Tensors (also inside tuples, lists and dicts) to the device; images (4-D) channels-last if asked."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(ctx.info.device, non_blocking=True)
        if ctx.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, ctx) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, ctx) for k, v in batch.items()}
    return batch


def updates_per_epoch(steps: int, accum_steps: int) -> int:
    return math.ceil(steps / accum_steps)


def train_one_epoch(method: Method, model, loader, optimizer, schedule, ctx: LoopContext, epoch: int,
                    start_step: int = 0) -> dict:
    """One epoch of `loader` (or its rest from micro-batch `start_step`, a resumed run). Returns the mean
    loss and method logs, `steps` done, and `stopped` when max_updates or on_update ended it early."""
    model.train()
    info = ctx.info
    steps = len(loader)
    per_epoch = updates_per_epoch(steps, ctx.accum_steps)
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    timer = StepTimer()
    last_logged = start_step - 1  # the step of the previous log line; the speed is over the steps since
    stopped = False
    step = start_step
    optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader, start_step):
        batch = to_device(batch, ctx)
        group_end = min(steps, (step // ctx.accum_steps + 1) * ctx.accum_steps)
        last_micro = step + 1 == group_end
        sync = last_micro or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            out = method.training_step(model, batch, ctx)
            group = group_end - (step // ctx.accum_steps) * ctx.accum_steps
            _backward(out.loss / group if group > 1 else out.loss, ctx)
        _accumulate(sums, out)
        seen += 1
        if not last_micro:
            continue
        _optimizer_step(model, optimizer, ctx)
        num_updates = epoch * per_epoch + step // ctx.accum_steps + 1
        method.after_update(num_updates, ctx)
        if ctx.ema is not None:
            ctx.ema.update(method.module)
        if step % ctx.log_interval < ctx.accum_steps or step == steps - 1:
            _log_step(ctx, epoch, step, steps, sums, seen, optimizer, out.batch_size, timer, step - last_logged,
                      num_updates)
            last_logged = step
            if ctx.save_images_dir and info.is_main and isinstance(batch, (tuple, list)):
                _save_batch(batch[0], ctx.save_images_dir, step)
        schedule.after_update(num_updates)
        if ctx.on_update is not None and ctx.on_update(epoch, step + 1, num_updates):
            stopped = True
            break
        if ctx.max_updates is not None and num_updates >= ctx.max_updates:
            stopped = True
            break
    means = {k: v / max(seen, 1) for k, v in sums.items()}
    keys = sorted(means)
    values = distributed.all_reduce_mean(torch.stack([means[k].float() for k in keys]), info).tolist() if keys else []
    result = dict(zip(keys, values))
    if not math.isfinite(result.get("loss", 0.0)):
        raise NonFiniteLoss(f"train loss is {result['loss']} in epoch {epoch}")
    result.update(steps=step + 1 if seen else start_step, stopped=stopped)
    return result


def one_update(method: Method, model, batch, optimizer, ctx: LoopContext) -> None:
    """One optimiser step of train_one_epoch between two log steps, where the loop reads nothing back from the
    device (no accumulation, no log): the step the device-sync audits run (tests/data/test_device_on_meta.py,
    bench/gpucheck/checks.py)."""
    batch = to_device(batch, ctx)
    out = method.training_step(model, batch, ctx)
    _backward(out.loss, ctx)
    _accumulate({}, out)
    _optimizer_step(model, optimizer, ctx)
    method.after_update(1, ctx)


def _backward(loss: torch.Tensor, ctx: LoopContext) -> None:
    if ctx.scaler is not None:
        ctx.scaler.scale(loss).backward()
    else:
        loss.backward()


def _optimizer_step(model, optimizer, ctx: LoopContext) -> None:
    if ctx.clip_grad is not None:
        if ctx.scaler is not None:
            ctx.scaler.unscale_(optimizer)
        dispatch_clip_grad(model_parameters(model, exclude_head=ctx.clip_mode == "agc"), ctx.clip_grad,
                           mode=ctx.clip_mode)
    if ctx.scaler is not None:
        ctx.scaler.step(optimizer)
        ctx.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _accumulate(sums: dict, out) -> None:
    for key, value in {"loss": out.loss, **out.logs}.items():
        value = value.detach().float()
        sums[key] = sums[key] + value if key in sums else value.clone()


def _log_step(ctx, epoch, step, steps, sums, seen, optimizer, batch_size, timer, intervals, num_updates) -> None:
    """The log line of `step`: means over the epoch so far, and the speed over the `intervals` steps that
    the timer's lap covers (since the previous log line)."""
    info = ctx.info
    keys = sorted(sums)
    values = distributed.all_reduce_mean(torch.stack([sums[k] / seen for k in keys]), info).tolist()
    means = dict(zip(keys, values))
    if not math.isfinite(means["loss"]):
        raise NonFiniteLoss(f"loss is {means['loss']} at epoch {epoch} step {step}")
    if not info.is_main:
        return
    per_step = timer.lap() / max(1, intervals)
    lr = max(g["lr"] for g in optimizer.param_groups)
    remaining = (steps - step - 1) + (ctx.epochs - epoch - 1) * steps
    if ctx.max_updates is not None:
        remaining = min(remaining, (ctx.max_updates - num_updates) * ctx.accum_steps)
    extra = "".join(f" {k} {v:.4f}" for k, v in means.items() if k != "loss")
    print0(info, f"train: epoch {epoch} [{step + 1:>4d}/{steps}] loss {means['loss']:.4f}{extra} lr {lr:.3e} "
                 f"{batch_size * info.world_size / max(per_step, 1e-9):.1f} img/s ETA {format_eta(remaining * per_step)}")
    if ctx.trackers is not None:
        ctx.trackers.log({"iter": num_updates, "lr": lr, "train_loss_step": means["loss"],
                          **{f"train_{k}_step": v for k, v in means.items() if k != "loss"}}, step=num_updates)


def _save_batch(images, folder: str, step: int) -> None:
    import os

    from torchvision.utils import save_image

    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        return
    os.makedirs(folder, exist_ok=True)
    save_image(images.detach().float().cpu(), os.path.join(folder, f"train-batch-{step}.jpg"), padding=0,
               normalize=True)


@torch.no_grad()
def evaluate(model, loader, ctx: LoopContext, num_classes: int) -> dict:
    model.eval()
    info = ctx.info
    topk = 5 if num_classes >= 5 else 1
    totals = torch.zeros(4, device=info.device, dtype=torch.float64)  # loss sum, top1, top5, count
    for images, targets in loader:
        images, targets = to_device((images, targets), ctx)
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
