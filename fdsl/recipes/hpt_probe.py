"""`fdsl hpt linear` / `fdsl hpt finetune`: the HPT evaluation protocols (methods in fdsl.eval.transfer)
through the engine's fit driver.

Linear (docs/hpt.md, "Evaluation protocols"): frozen backbone (BN statistics included), Linear head, SGD lr 30, momentum 0.9, wd 0,
5000 steps of 512 with lr x 0.1 at 1651 and 3333, val and test every 100 steps, seeds 0/1/2.
Fine-tune: everything trains, head lr x 100, SGD momentum 0.9, wd 0, 64 x 4 accumulated = 256 per
step; by iteration (2500 steps, drops at 833 / 1667, eval every 25) or by epoch (90, drops at 30 / 60, eval
every epoch). By iteration, as published (`published_schedule`, the default): the budget counts optimiser
steps (its trainer multiplied it by the accumulation) but the lr drops and the evaluation interval count
forward passes, so the drops come after steps 208 and 416 and there are 400 evaluations, some between
optimiser steps. `--published-schedule false`: all three count optimiser steps (drops after 833 and 1667,
100 evaluations).

Outputs in --output: metrics.jsonl (one row per evaluation: step, epoch, val_*, test_*), run.json (the
number of evaluations the schedule promises, for the completeness check of `fdsl hpt aggregate`), and
result.json (test at the best val: the published selection, and "fixed", see results.py), besides the
engine's checkpoints and summary.csv.
"""
from __future__ import annotations

import json
import math
import os
import time

import torch

from fdsl.engine import distributed, schedule
from fdsl.engine.fit import RunConfig, fit, seed_epoch
from fdsl.engine.logging import print0
from fdsl.errors import UserError
from fdsl.eval.data import predict
from fdsl.eval.transfer import (
    FineTune,
    LinearProbe,
    classification_metrics,
    eval_transform,
    headline,
    train_transform,
)
from fdsl.recipes.common import plain_args, trackers_args
from fdsl.recipes.hpt_pretrain import Schedule
from fdsl.ssl.backbone import create_backbone, load_base
from fdsl.ssl.hpt import data as hpt_data
from fdsl.ssl.hpt.records import append_jsonl, best_val_test, read_jsonl, series


def run(args) -> int:
    return distributed.run(lambda info: _run(args, info), args.device)


def load_backbone(args, info):
    backbone = create_backbone(args.arch)
    load_base(backbone, args.weights, log=lambda m: print0(info, m), random_init=args.random_init)
    return backbone


def _datasets(args):
    train_tf = train_transform(args.crop_size, args.mean, args.std)
    test_tf = eval_transform(args.crop_size, args.test_precrop_size, args.mean, args.std)
    train = hpt_data.labeled_dataset(args.train_list, args.train_folder, args.data_root, train_tf, args.class_map,
                                      args.num_classes, "train")
    num_classes = args.num_classes or hpt_data.num_classes_of(train)
    classes = getattr(train, "classes", None) if args.train_folder else None
    evals = {}
    for split in ("val", "test"):
        lst, fold = getattr(args, f"{split}_list"), getattr(args, f"{split}_folder")
        if lst:
            evals[split] = hpt_data.labeled_dataset(lst, None, args.data_root, test_tf, args.class_map, num_classes)
        elif fold:
            from fdsl.data.folder import ImageFolder

            evals[split] = ImageFolder(fold, test_tf, classes)
    if "val" not in evals:
        raise UserError("no validation data: pass --val-list (or --val-folder); the protocol picks the step by it")
    return train, num_classes, evals


def _check_schedule(args) -> None:
    if args.by not in ("iter", "epoch"):
        raise UserError(f"--by {args.by!r}: choose iter or epoch")
    if args.by == "epoch" and not args.epochs:
        raise UserError("--by epoch needs --epochs N")


class Evaluations:
    """val and test of a module, one row of metrics.jsonl per evaluation; returns the val headline."""

    def __init__(self, evals: dict, info, batch: int, workers: int, amp, metrics_path: str):
        self.evals, self.info, self.batch, self.workers = evals, info, batch, workers
        self.autocast = (lambda: torch.autocast(info.device.type, dtype=amp)) if amp else None
        self.metrics_path = metrics_path

    def row(self, module, row: dict) -> float | None:
        for split, dataset in self.evals.items():
            logits, targets = predict(module, dataset, self.batch, self.workers, self.info, self.autocast)
            row.update({f"{split}_{k}": v for k, v in classification_metrics(logits, targets).items()})
        if self.info.is_main:
            append_jsonl(self.metrics_path, row)
        shown = " ".join(f"{s} {headline({k[len(s) + 1:]: v for k, v in row.items() if k.startswith(s + '_')}):.2f}"
                         for s in self.evals)
        print0(self.info, f"eval: step {row['step']:g} {shown}")
        return headline({k[4:]: v for k, v in row.items() if k.startswith("val_")})


class PassEvaluatedFineTune(FineTune):
    """The published fine-tune by iteration with accumulation: val and test every `interval` forward passes,
    as the published ValidateHook saw them (the weights of the last optimiser step, the BN statistics of every
    pass). A pass that ends mid-accumulation is evaluated at once; a step's last pass after its optimiser step
    (the published step hook ran before ValidateHook): the schedule calls `evaluate_pending` then."""

    def __init__(self, backbone, num_classes: int, head_lr_mult: float, evaluations: Evaluations, interval: int,
                 passes_per_step: int, epoch_passes: int):
        super().__init__(backbone, num_classes, head_lr_mult)
        self.evaluations = evaluations
        self.interval, self.passes_per_step, self.epoch_passes = interval, passes_per_step, epoch_passes
        self.pending: list[int] = []  # passes whose evaluation waits for the optimiser step they end
        self.last_val: float | None = None  # the last evaluation's val headline: it ranks the checkpoint

    def after_forward(self, passes: int) -> None:
        if passes % self.interval:
            return
        if passes % self.passes_per_step:
            self.evaluate_at(passes)
        else:
            self.pending.append(passes)

    def evaluate_pending(self, num_updates: int) -> None:
        while self.pending:
            self.evaluate_at(self.pending.pop(0))

    def evaluate_at(self, done: int) -> None:
        """After `done` forward passes (step: a fraction where the passes end mid-accumulation)."""
        row = {"step": done / self.passes_per_step, "passes": done, "epoch": (done - 1) // self.epoch_passes}
        self.last_val = self.evaluations.row(self.module, row)


def build_method(args, backbone, num_classes: int, evaluations: Evaluations):
    if args.protocol == "linear":
        return LinearProbe(backbone, num_classes)
    passes = passes_per_step(args)
    if passes > 1:
        return PassEvaluatedFineTune(backbone, num_classes, args.head_lr_mult, evaluations, args.eval_interval,
                                     passes, math.lcm(args.eval_interval, passes))
    return FineTune(backbone, num_classes, args.head_lr_mult)


def build_loader(args, info, train, batch: int):
    """(data, loader, max_updates, epochs, evaluations the schedule promises) of the protocol's schedule."""
    pin = info.device.type == "cuda"
    passes = passes_per_step(args)
    if passes > 1:  # the published fine-tune: evaluations every eval_interval forward passes
        epoch_passes = math.lcm(args.eval_interval, passes)  # whole optimiser steps per epoch
        data, loader = hpt_data.stream_loader(train, info, batch, epoch_passes, args.seed, args.workers, pin)
        return (data, loader, args.iters, math.ceil(args.iters * passes / epoch_passes),
                args.iters * passes // args.eval_interval)
    if args.by == "iter":
        interval = max(1, min(args.eval_interval, args.iters))
        data, loader = hpt_data.stream_loader(train, info, batch, interval * args.accum_steps, args.seed,
                                               args.workers, pin)
        epochs = math.ceil(args.iters / interval)
        return data, loader, args.iters, epochs, epochs
    data, loader = hpt_data.epoch_loader(train, info, batch, args.seed, args.workers)
    return data, loader, None, args.epochs, args.epochs // max(1, args.eval_interval)


def _run(args, info) -> None:
    _check_schedule(args)
    if args.batch_size % info.world_size:
        raise UserError(f"--batch-size {args.batch_size} (global) does not split over {info.world_size} processes")
    batch = args.batch_size // info.world_size
    seed_epoch(args.seed, info.rank, 0)
    train, num_classes, evals = _datasets(args)
    amp = torch.bfloat16 if args.amp and info.device.type == "cuda" else None
    metrics_path = os.path.join(args.output, "metrics.jsonl")
    evaluations = Evaluations(evals, info, max(1, min(256, batch)), min(args.workers, 4), amp, metrics_path)
    method = build_method(args, load_backbone(args, info), num_classes, evaluations)
    method.module.to(info.device)
    data, loader, max_updates, epochs, expected = build_loader(args, info, train, batch)
    per_epoch = math.ceil(len(loader) / args.accum_steps)
    groups = [dict(g, lr=args.lr * g.pop("lr_scale", 1.0)) for g in method.optimizer_params()]
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    sched = _schedule(args, optimizer, per_epoch, getattr(method, "evaluate_pending", None))
    if info.is_main:
        os.makedirs(args.output, exist_ok=True)
        _write_json(os.path.join(args.output, "run.json"),
                    {"expected_evals": expected, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "weights": args.weights, "protocol": args.protocol, "by": args.by, "seed": args.seed})

    def evaluate(epoch: int) -> dict:
        if args.by == "epoch" and (epoch + 1) % max(1, args.eval_interval):
            return {}
        if passes_per_step(args) > 1:  # evaluated during the epoch (PassEvaluatedFineTune); the last value ranks
            last_val = getattr(method, "last_val", None)
            return {"metric": last_val} if last_val is not None else {}
        step = min((epoch + 1) * per_epoch, max_updates) if max_updates else (epoch + 1) * per_epoch
        return {"metric": evaluations.row(method.module, {"step": step, "epoch": epoch})}

    cfg = RunConfig(run_dir=args.output, arch=args.arch, args=plain_args(args), seed=args.seed, epochs=epochs,
                    max_updates=max_updates, accum_steps=args.accum_steps,
                    resume="auto" if args.resume == "auto" else ("" if args.resume == "none" else args.resume),
                    log_interval=args.log_interval, pause_updates=args.pause_updates, amp_dtype=amp,
                    trackers_args=trackers_args(args), checkpoint_hist=1, higher_is_better=True,
                    describe=f"hpt {args.protocol}: {args.arch} from {args.weights or 'random init'}, "
                             f"{num_classes} classes, {len(train)} training images")
    fit(cfg, info, method, data, loader, optimizer, sched, evaluate)
    if info.is_main:
        summary = dict(summarise(metrics_path), fixed=summarise(metrics_path, "fixed"))
        _write_json(os.path.join(args.output, "result.json"), summary)
        for name, shown in (("published selection", summary), ("--selection fixed", summary["fixed"])):
            if shown.get("test") is not None:
                print0(info, f"result ({name}): test {shown['test']:.2f} at best val {shown['val']:.2f} "
                             f"(step {shown['step']:g})")


def passes_per_step(args) -> int:
    """Forward passes per optimiser step that the schedule counts in: the published by-iteration schedule
    (`published_schedule`, the default) counts lr steps and the evaluation interval in forward passes
    (mmcv runner iterations; its trainer multiplied only the budget by the accumulation); 1 = optimiser steps."""
    return args.accum_steps if args.published_schedule and args.by == "iter" else 1


def decay_points(lr_steps, passes: int) -> list[int]:
    """timm's milestones for the published rule "lr x 0.1 from index d on" (mmcv: the step taken at runner
    iteration i >= d): a step m is taken at pass passes*m + passes-1, so it drops from m = ceil((d+1)/passes)-1;
    timm applies a milestone t from index t - 1, hence t = ceil((d+1)/passes). passes=1: d+1."""
    return [-(-(d + 1) // passes) for d in lr_steps]


def _schedule(args, optimizer, per_epoch: int, at_update) -> schedule.Schedule:
    """lr x 0.1 at each of lr_steps: optimiser steps or forward passes (by iter), or epochs (by epoch)."""
    from timm.scheduler import MultiStepLRScheduler

    by_iter = args.by == "iter"
    decay = decay_points(args.lr_steps, passes_per_step(args))
    sched = MultiStepLRScheduler(optimizer, decay_t=decay, decay_rate=0.1, t_in_epochs=not by_iter)
    if by_iter:
        return Schedule(sched, per_epoch, at_update)
    return schedule.Schedule(sched, False, per_epoch)


def summarise(metrics_path: str, selection: str = "published") -> dict:
    """Test at the best val among the late evaluations, as `fdsl hpt aggregate --selection <selection>`
    (result.json holds the published one, and the fixed one under "fixed")."""
    rows = read_jsonl(metrics_path) if os.path.isfile(metrics_path) else []
    best = best_val_test(series(rows, "val", selection), series(rows, "test", selection), selection)
    if best is None:
        return {"evals": len(rows), "val": None, "test": None, "step": None}
    index, val, test = best
    return {"evals": len(rows), "val": val, "test": test, "step": rows[index]["step"]}


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
