"""The HPT schedules against the published ones, step by step. The reference is the published runner's
arithmetic written out (mmcv IterBasedRunner: hooks fire per runner iteration = forward pass; the
optimiser hook steps on passes i with (i + 1) % update_interval == 0; the step policy drops from
iteration d on; CosineAnnealing with a linear warm-up multiplies the cosine; BYOLHook sets tau at the
iteration of each step; train_model multiplies total_iters by update_interval)."""
from __future__ import annotations

import math
from argparse import Namespace

import pytest
import torch
from timm.scheduler import MultiStepLRScheduler

from fdsl.recipes.hpt_pretrain import PassCosine, budget
from fdsl.recipes.hpt_probe import decay_points

pytestmark = pytest.mark.usefixtures("one_thread")


def _published_steps(total_iters: int, interval: int, lr_at, eval_every: int | None = None):
    """(lr of each optimiser step, steps done at each evaluation) of a published by-iteration run."""
    lrs, evals = [], []
    for i in range(total_iters * interval):  # train_model: total_iters *= update_interval
        if (i + 1) % interval == 0:
            lrs.append(lr_at(i))
        if eval_every and (i + 1) % eval_every == 0:
            evals.append((i + 1) / interval)
    return lrs, evals


def _mmcv_step(base: float, drops):
    return lambda i: base * 0.1 ** sum(i >= d for d in drops)


def _multistep(decay, n: int, base: float = 1.0, in_epochs: bool = False):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = MultiStepLRScheduler(opt, decay_t=decay, decay_rate=0.1, t_in_epochs=in_epochs)
    lrs = []
    for m in range(n):
        if m:
            sched.step(m) if in_epochs else sched.step_update(m)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_finetune_2500_steps_drop_after_208_and_416_with_400_evaluations():
    """Published 2500-iter fine-tune (64 x 4 accumulated): drops 833/1667 and evaluations every 25 in
    forward passes. fdsl's default reproduces each step's lr; --published-schedule false counts steps."""
    published, evals = _published_steps(2500, 4, _mmcv_step(0.01, (833, 1667)), eval_every=25)
    assert len(published) == 2500 and len(evals) == 400 and evals[:3] == [6.25, 12.5, 18.75]
    ours = _multistep(decay_points([833, 1667], 4), 2500, 0.01)
    assert ours == pytest.approx(published, rel=1e-12)
    first_low = [next(m for m, lr in enumerate(ours) if lr < bound) for bound in (0.009, 0.0009)]
    assert first_low == [208, 416]  # 208 and 416 steps at the higher lr: the drops at 8% and 17%
    fixed = _multistep(decay_points([833, 1667], 1), 2500, 0.01)
    assert [next(m for m, lr in enumerate(fixed) if lr < b) for b in (0.009, 0.0009)] == [833, 1667]


def test_linear_eval_and_by_epoch_drops_start_where_mmcv_starts_them():
    published, _ = _published_steps(5000, 1, _mmcv_step(30.0, (1651, 3333)))
    assert _multistep(decay_points([1651, 3333], 1), 5000, 30.0) == pytest.approx(published, rel=1e-12)
    by_epoch = [0.01 * 0.1 ** sum(e >= d for d in (30, 60)) for e in range(90)]  # runner.epoch >= d
    assert _multistep(decay_points([30, 60], 1), 90, 0.01, in_epochs=True) == pytest.approx(by_epoch, rel=1e-12)


def _byol_args(published: bool) -> Namespace:
    return Namespace(method="byol", iters=50, accum_steps=2, published_schedule=published)


def test_byol_50_iters_config_trains_100_steps_with_the_published_lr_and_tau():
    """byol_*/50-iters.py: total_iters = 50 * 2, times update_interval 2 = 200 passes of 128 = 100 steps of
    256 (twice the 50 x 256 images the name says); warm-up 10 passes, cosine over 200 passes."""
    assert budget(_byol_args(True)) == (100, 2) and budget(_byol_args(False)) == (50, 1)
    base, total = 0.3, 200

    def mmcv_lr(i):
        regular = 0.5 * base * (math.cos(math.pi * i / total) + 1)
        return regular * (1 - (1 - i / 10) * (1 - 1e-4)) if i < 10 else regular

    published, _ = _published_steps(100, 2, mmcv_lr)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = PassCosine(opt, *budget(_byol_args(True)), warmup=10, ratio=1e-4)
    ours = []
    for m in range(100):
        sched.step_update(m)
        ours.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(published, rel=1e-12, abs=1e-15)

    from fdsl.ssl.backbone import create_backbone
    from fdsl.ssl.byol import BYOL

    byol = BYOL(create_backbone("test_resnet"), total_updates=100, passes=2, proj_dim=4, hidden=8)
    taus = []
    for m in range(1, 101):
        byol.after_update(m)
        taus.append(byol.tau)
    published_tau = [1 - 0.01 * (math.cos(math.pi * i / total) + 1) / 2 for i in range(total) if (i + 1) % 2 == 0]
    assert taus == pytest.approx(published_tau, rel=1e-12)


def test_moco_cosine_is_unchanged_per_step():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.03)
    sched = PassCosine(opt, 5000)
    for m in (0, 1, 2500, 4999):
        sched.step_update(m)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.015 * (1 + math.cos(math.pi * m / 5000)), rel=1e-12)
