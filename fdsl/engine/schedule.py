"""LR schedules with the published semantics (spec 1.9), built from timm's scheduler classes.

`cosine_iter` / `linear_iter` are timm's cosine / poly(power=1) schedulers stepped per iteration with
warmup_prefix=False (the cosine is measured from iteration 0, so warmup is not a prefix), which is exactly
the published factory. Fixed here: an unknown --sched is an error instead of a constant LR (D16), and
--lr-noise is converted to iterations for *_iter schedules (published compared epochs with iterations).
Every schedule is recomputed from the epoch on resume, except `plateau`, whose state is saved (Schedule.state_dict).
"""
from __future__ import annotations

from timm.scheduler import (
    CosineLRScheduler,
    PlateauLRScheduler,
    PolyLRScheduler,
    StepLRScheduler,
    TanhLRScheduler,
)

from fdsl.errors import UserError

PLATEAU_STATE = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch")
SCHEDULES = ("cosine", "tanh", "step", "plateau", "cosine_iter", "linear", "linear_iter", "none")


class Schedule:
    """One object the loop calls: after every update, and at the end of every epoch."""

    def __init__(self, scheduler, per_iteration: bool, iters_per_epoch: int):
        self.scheduler = scheduler
        self.per_iteration = per_iteration
        self.iters_per_epoch = iters_per_epoch

    def after_update(self, num_updates: int, metric: float | None = None) -> None:
        if self.scheduler is not None:
            self.scheduler.step_update(num_updates, metric)

    def after_epoch(self, epoch: int, metric: float | None = None) -> None:
        """Called with the 0-based index of the epoch just finished (published: step(epoch + 1, metric))."""
        if self.scheduler is not None and not self.per_iteration:
            self.scheduler.step(epoch + 1, metric)

    def state_dict(self) -> dict | None:
        """Only the plateau schedule has state that the epoch count cannot recompute: ReduceLROnPlateau's best
        metric and counters (timm's own state_dict keeps only `best`). Plain numbers, for weights_only loads."""
        if not isinstance(self.scheduler, PlateauLRScheduler):
            return None
        inner = self.scheduler.lr_scheduler
        state = {key: getattr(inner, key) for key in PLATEAU_STATE}
        state["restore_lr"] = self.scheduler.restore_lr  # the LRs under the current --lr-noise, or None
        return {"plateau": state}

    def load_state_dict(self, state: dict | None) -> None:
        if not state or "plateau" not in state or not isinstance(self.scheduler, PlateauLRScheduler):
            return
        plateau = dict(state["plateau"])
        self.scheduler.restore_lr = plateau.pop("restore_lr", None)
        for key, value in plateau.items():
            setattr(self.scheduler.lr_scheduler, key, value)

    def fast_forward(self, start_epoch: int, num_updates: int) -> None:
        """Where a resumed run starts: epoch `start_epoch`, after `num_updates` optimiser steps."""
        if self.scheduler is None or (start_epoch <= 0 and num_updates <= 0):
            return
        if self.per_iteration:
            self.scheduler.step_update(num_updates)
        else:
            self.scheduler.step(start_epoch)


def _noise_range(args, scale: int):
    if not args.lr_noise:
        return None
    bounds = [n * args.epochs * scale for n in args.lr_noise]
    return bounds[0] if len(bounds) == 1 else bounds


def build(args, optimizer, iters_per_epoch: int) -> Schedule:
    name = args.sched
    if name not in SCHEDULES:
        raise UserError(f"--sched {name!r} is not a schedule; choose one of: {', '.join(SCHEDULES)}")
    if name == "none":
        return Schedule(None, False, iters_per_epoch)
    per_iter = name.endswith("_iter")
    scale = iters_per_epoch if per_iter else 1
    if per_iter:
        warmup_t = args.warmup_iter if args.warmup_iter > 0 else args.warmup_epochs * iters_per_epoch
    else:
        warmup_t = args.warmup_epochs
    common = {
        "warmup_t": warmup_t, "warmup_lr_init": args.warmup_lr, "t_in_epochs": not per_iter,
        "noise_range_t": _noise_range(args, scale), "noise_pct": args.lr_noise_pct,
        "noise_std": args.lr_noise_std, "noise_seed": args.seed,
    }
    cycle = {"t_initial": args.epochs * scale, "lr_min": args.min_lr, "cycle_mul": args.lr_cycle_mul,
             "cycle_decay": args.decay_rate, "cycle_limit": args.lr_cycle_limit, "warmup_prefix": False}
    if name in ("cosine", "cosine_iter"):
        sched = CosineLRScheduler(optimizer, **cycle, **common)
    elif name in ("linear", "linear_iter"):
        sched = PolyLRScheduler(optimizer, power=1.0, **cycle, **common)
    elif name == "tanh":
        sched = TanhLRScheduler(optimizer, **cycle, **common)
    elif name == "step":
        sched = StepLRScheduler(optimizer, decay_t=args.decay_epochs, decay_rate=args.decay_rate,
                                warmup_prefix=False, **common)
    else:  # plateau
        common.pop("t_in_epochs")
        sched = PlateauLRScheduler(optimizer, decay_rate=args.decay_rate, patience_t=args.patience_epochs,
                                   lr_min=args.min_lr, mode="min" if "loss" in args.eval_metric else "max",
                                   cooldown_t=0, **common)
    return Schedule(sched, per_iter, iters_per_epoch)


def scale_lr(args, global_batch: int) -> None:
    """The hydra trainers' linear rule: lr, warmup-lr and min-lr times global batch / reference (spec 4.6)."""
    if args.lr_scale_batch:
        factor = global_batch / args.lr_scale_batch
        args.lr, args.warmup_lr, args.min_lr = args.lr * factor, args.warmup_lr * factor, args.min_lr * factor
