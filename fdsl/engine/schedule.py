"""LR schedules with the published semantics (docs/training.md), built from timm's scheduler classes.

`cosine_iter` / `linear_iter` are timm's cosine / poly(power=1) schedulers stepped per iteration with
warmup_prefix=False (the cosine is measured from iteration 0, so warmup is not a prefix), which is exactly
the published factory. Fixed here: an unknown --sched is an error instead of a constant LR (D16), and
--lr-noise is converted to iterations for *_iter schedules (published compared epochs with iterations).
Every schedule is recomputed from the epoch on resume, except `plateau`, whose state is saved (Schedule.state_dict).
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class ScheduleSpec:
    """The schedule options of a run, typed (the recipe fills them from --sched, --epochs, --warmup-*, ...);
    the defaults are the command line's."""

    sched: str = "step"
    epochs: int = 200
    warmup_epochs: int = 3
    warmup_iter: int = 0  # *_iter schedules: warmup iterations (replaces warmup_epochs when > 0)
    warmup_lr: float = 1e-4
    min_lr: float = 1e-5
    lr_noise: list[float] | None = None
    lr_noise_pct: float = 0.67
    lr_noise_std: float = 1.0
    lr_cycle_mul: float = 1.0
    lr_cycle_limit: int = 1
    decay_epochs: float = 30
    decay_rate: float = 0.1
    patience_epochs: int = 10
    eval_metric: str = "loss"  # plateau: 'min' mode for a loss, 'max' otherwise
    seed: int = 42  # the LR noise's seed


def _noise_range(spec: ScheduleSpec, scale: int):
    if not spec.lr_noise:
        return None
    bounds = [n * spec.epochs * scale for n in spec.lr_noise]
    return bounds[0] if len(bounds) == 1 else bounds


def build(spec: ScheduleSpec, optimizer, iters_per_epoch: int) -> Schedule:
    name = spec.sched
    if name not in SCHEDULES:
        raise UserError(f"--sched {name!r} is not a schedule; choose one of: {', '.join(SCHEDULES)}")
    if name == "none":
        return Schedule(None, False, iters_per_epoch)
    per_iter = name.endswith("_iter")
    scale = iters_per_epoch if per_iter else 1
    if per_iter:
        warmup_t = spec.warmup_iter if spec.warmup_iter > 0 else spec.warmup_epochs * iters_per_epoch
    else:
        warmup_t = spec.warmup_epochs
    common = {
        "warmup_t": warmup_t, "warmup_lr_init": spec.warmup_lr, "t_in_epochs": not per_iter,
        "noise_range_t": _noise_range(spec, scale), "noise_pct": spec.lr_noise_pct,
        "noise_std": spec.lr_noise_std, "noise_seed": spec.seed,
    }
    cycle = {"t_initial": spec.epochs * scale, "lr_min": spec.min_lr, "cycle_mul": spec.lr_cycle_mul,
             "cycle_decay": spec.decay_rate, "cycle_limit": spec.lr_cycle_limit, "warmup_prefix": False}
    if name in ("cosine", "cosine_iter"):
        sched = CosineLRScheduler(optimizer, **cycle, **common)
    elif name in ("linear", "linear_iter"):
        sched = PolyLRScheduler(optimizer, power=1.0, **cycle, **common)
    elif name == "tanh":
        sched = TanhLRScheduler(optimizer, **cycle, **common)
    elif name == "step":
        sched = StepLRScheduler(optimizer, decay_t=spec.decay_epochs, decay_rate=spec.decay_rate,
                                warmup_prefix=False, **common)
    else:  # plateau
        common.pop("t_in_epochs")
        sched = PlateauLRScheduler(optimizer, decay_rate=spec.decay_rate, patience_t=spec.patience_epochs,
                                   lr_min=spec.min_lr, mode="min" if "loss" in spec.eval_metric else "max",
                                   cooldown_t=0, **common)
    return Schedule(sched, per_iter, iters_per_epoch)


def scaled_lrs(lr: float, warmup_lr: float, min_lr: float, reference_batch: int, global_batch: int) -> tuple:
    """The hydra trainers' linear rule (docs/training.md): lr, warmup-lr and min-lr times global batch / the
    reference batch (--lr-scale-batch); a reference of 0 leaves them."""
    if not reference_batch:
        return lr, warmup_lr, min_lr
    factor = global_batch / reference_batch
    return lr * factor, warmup_lr * factor, min_lr * factor
