"""cosine_iter and friends against the spec's worked values (training.md 1.9)."""
import argparse

import pytest
import torch

from fdsl.cli.args import parse
from fdsl.engine import schedule
from fdsl.errors import UserError
from fdsl.recipes.common import scale_lr, schedule_spec


def make(argv, iters):
    args = parse("pretrain", ["DIR", *argv])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    return schedule.build(schedule_spec(args), opt, iters), opt


def lr_after(sched, opt, u):
    sched.after_update(u)
    return opt.param_groups[0]["lr"]


def test_visualatom_worked_values():
    sched, opt = make(["--sched", "cosine_iter", "--lr", "1e-3", "--warmup-lr", "1e-6", "--min-lr", "1e-5",
                       "--warmup-iter", "5000", "--epochs", "90"], iters=1000)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)  # set on construction
    assert lr_after(sched, opt, 0) == pytest.approx(1e-6)
    assert lr_after(sched, opt, 4999) == pytest.approx(9.998e-4, rel=1e-4)
    assert lr_after(sched, opt, 5000) == pytest.approx(9.9248e-4, rel=1e-4)  # warmup is not a prefix
    assert lr_after(sched, opt, 45000) == pytest.approx(5.05e-4, rel=1e-3)
    assert lr_after(sched, opt, 89999) == pytest.approx(1.0e-5, rel=1e-3)
    assert lr_after(sched, opt, 95000) == pytest.approx(1.0e-5)  # cooldown holds min-lr


def test_short_test_scripts_never_leave_warmup():
    # CVPR22 test scripts: --warmup-epochs 5 --epochs 2, default warmup-lr 1e-4 (D24)
    sched, opt = make(["--sched", "cosine_iter", "--lr", "1e-3", "--warmup-epochs", "5", "--epochs", "2"], iters=100)
    assert lr_after(sched, opt, 200) == pytest.approx(1e-4 + 2 / 5 * (1e-3 - 1e-4))


def test_warmup_epochs_convert_to_iterations_and_fast_forward():
    sched, opt = make(["--sched", "cosine_iter", "--lr", "1e-3", "--warmup-epochs", "2", "--epochs", "10"], iters=10)
    sched.fast_forward(1, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 + 10 / 20 * (1e-3 - 1e-4))


def test_epoch_schedules_step_at_epoch_end():
    sched, opt = make(["--sched", "step", "--lr", "0.1", "--warmup-epochs", "0", "--decay-epochs", "2"], iters=5)
    sched.after_epoch(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    sched.after_epoch(1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_linear_iter_decays_linearly():
    sched, opt = make(["--sched", "linear_iter", "--lr", "1e-3", "--min-lr", "0", "--warmup-epochs", "0",
                       "--epochs", "2"], iters=10)
    assert lr_after(sched, opt, 10) == pytest.approx(5e-4)


def test_unknown_schedule_is_an_error_not_a_constant_lr():
    with pytest.raises(UserError, match="cosine_iter"):
        make(["--sched", "cosinee"], iters=10)


def test_hydra_lr_scaling():
    args = argparse.Namespace(lr=0.01, warmup_lr=1e-6, min_lr=1e-5, lr_scale_batch=512)
    scale_lr(args, 96 * 8)
    assert args.lr == pytest.approx(0.015)
