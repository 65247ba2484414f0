"""`fdsl hpt pretrain`: one MoCo v2 / BYOL stage through the engine's fit driver.

Wiring only: data (list, folder, shards or on-the-fly database) with the method's two views -> backbone
from the base checkpoint -> method -> optimiser + per-iteration schedule -> fit() for `iters` optimiser
steps. Epochs are fixed-length slices of the sample stream (`epoch_updates` steps each) so that the
engine's per-epoch checkpoint, resume point and the k-NN probe come at a steady pace whatever the data set
size. At the end rank 0 writes final_backbone.pth (torchvision names) and final_backbone.json (base,
dataset, steps: how the hierarchy is read back).

Starting from a base and resuming are separate: `--base` initialises the backbone of a new run; with
`--resume auto` (the default) an interrupted run continues from its own last.pth.tar (queue, momentum
encoder, tau step, sampler position and RNG states included) and the base is not read again.
"""
from __future__ import annotations

import math
import os
import time

import torch

from fdsl.engine import distributed, schedule
from fdsl.engine.fit import RunConfig, fit, seed_epoch
from fdsl.engine.logging import print0
from fdsl.errors import UserError
from fdsl.recipes.common import plain_args, trackers_args
from fdsl.ssl import backbone as bb
from fdsl.ssl import methods
from fdsl.ssl.hpt.records import append_jsonl
from fdsl.ssl.optim import build_optimizer
from fdsl.ssl.views import build_views


def run(args) -> int:
    return distributed.run(lambda info: _run(args, info), args.device)


def local_batch(args, info) -> int:
    if args.batch_size % info.world_size:
        raise UserError(f"--batch-size {args.batch_size} (global) does not split over {info.world_size} "
                        f"processes; use a multiple of {info.world_size}")
    return args.batch_size // info.world_size


def build_data(args, info, batch: int, batches_per_epoch: int, transform):
    """(data, loader) of the pre-training images, any source; labels are ignored."""
    from fdsl.ssl.hpt.data import Data, stream_loader

    sources = [k for k in ("train_list", "train_folder", "train_shards", "synthetic") if getattr(args, k)]
    if len(sources) != 1:
        raise UserError("give exactly one pre-training source: --train-list, --train-folder, --train-shards "
                        f"or --synthetic (got {', '.join(sources) or 'none'})")
    pin = info.device.type == "cuda"
    if args.train_shards:
        from torch.utils.data import DataLoader

        from fdsl.data import shards

        ds = shards.ShardDataset(args.train_shards, transform, info.rank, info.world_size, args.seed)
        size = args.dataset_size or shards.default_size(args.train_shards, 1)
        per_rank = size // (batch * info.world_size)
        if per_rank == 0:
            raise UserError(f"--dataset-size {size} is smaller than one global batch; lower --batch-size")
        loader = DataLoader(ds, batch_size=batch, drop_last=True, num_workers=args.workers, pin_memory=pin)
        return Data(ds), shards.LimitedLoader(loader, per_rank)
    if args.synthetic:
        from fdsl.data.onthefly import OnTheFlyDataset

        ds = OnTheFlyDataset.from_registry(args.synthetic, args.synthetic_classes, args.crop_size,
                                           args.synthetic_seed, args.synthetic_instances, transform)
    elif args.train_list:
        from fdsl.data.image_list import ImageList

        ds = ImageList(args.train_list, args.data_root, transform)
    else:
        from fdsl.data import folder

        ds = folder.ImageFolder(args.train_folder, transform)
    return stream_loader(ds, info, batch, batches_per_epoch, args.seed, args.workers, pin)


def budget(args) -> tuple[int, int]:
    """(optimiser steps, forward passes per step the schedules count in) of `--iters N`, as the method counts
    it (fdsl.ssl.methods.SelfSupervised.budget)."""
    return methods.get(args.method).budget(methods.PretrainOptions.from_values(vars(args)))


def build_method(args, info, backbone, batch: int) -> methods.SelfSupervised:
    options = methods.PretrainOptions.from_values(vars(args))
    return methods.get(args.method).from_options(backbone, options, batch * info.world_size, batch)


class Schedule(schedule.Schedule):
    """The engine's per-iteration schedule, which also calls `at_update(num_updates)` after every step
    (the kept backbones of checkpoint_interval, which need not fall on an epoch end)."""

    def __init__(self, scheduler, per_epoch: int, at_update=None):
        super().__init__(scheduler, True, per_epoch)
        self.at_update = at_update

    def after_update(self, num_updates: int, metric: float | None = None) -> None:
        super().after_update(num_updates, metric)
        if self.at_update is not None:
            self.at_update(num_updates)


class PassCosine:
    """mmcv's CosineAnnealing to 0 with its linear warm-up (the published lr_config), set before every
    optimiser step. Step m is taken at forward pass i = passes*m + passes-1 of total = passes*steps:
    lr = base * (1 + cos(pi * i / total)) / 2, times 1 - (1 - i / warmup) * (1 - ratio) while i < warmup.
    passes = 1 (MoCo; BYOL with --published-schedule false) counts optimiser steps."""

    def __init__(self, optimizer, steps: int, passes: int = 1, warmup: int = 0, ratio: float = 1e-4):
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.total, self.passes, self.warmup, self.ratio = steps * passes, passes, warmup, ratio
        self.step_update(0)

    def factor(self, step: int) -> float:
        i = self.passes * step + self.passes - 1
        f = (1 + math.cos(math.pi * min(i, self.total) / self.total)) / 2
        if i < self.warmup:
            f *= 1 - (1 - i / self.warmup) * (1 - self.ratio)
        return f

    def step_update(self, num_updates: int, metric=None) -> None:
        f = self.factor(num_updates)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * f

    def step(self, epoch: int, metric=None) -> None:
        pass


def build_schedule(args, optimizer, per_epoch: int, at_update) -> Schedule:
    """Cosine to 0 over the budget after an optional linear warm-up (BYOL: 10 forward passes from lr x 1e-4,
    published; 10 steps with --published-schedule false)."""
    steps, passes = budget(args)
    return Schedule(PassCosine(optimizer, steps, passes, args.warmup_iters, args.warmup_ratio), per_epoch,
                    at_update)


class KnnMonitor:
    """The weighted k-NN probe (k=20, cosine) of the backbone on the target's val list, after every epoch."""

    def __init__(self, args, info, method):
        from fdsl.eval.transfer import eval_transform
        from fdsl.ssl.hpt.data import eval_loader, labeled_dataset

        tf = eval_transform(args.crop_size, args.test_precrop_size, args.mean, args.std)
        train = labeled_dataset(args.knn_train_list, None, args.data_root, tf, args.class_map)
        val = labeled_dataset(args.knn_val_list, None, args.data_root, tf, args.class_map)
        if getattr(train, "multi_label", False):
            raise UserError("the k-NN probe needs single-label lists; drop --knn-train-list for multi-label data")
        batch = max(1, min(256, args.batch_size))
        self.loaders = [eval_loader(ds, info, batch, min(args.workers, 4)) for ds in (train, val)]
        self.info = info
        self.method = method
        self.k = args.knn_k
        self.path = os.path.join(args.output, "knn.jsonl")

    def __call__(self, step: int, epoch: int) -> float:
        from fdsl.engine.features import extract, gather_in_order
        from fdsl.eval.knn import knn_top1

        module = self.method.module
        was_training = module.training
        module.eval()
        feats = []
        for loader in self.loaders:
            f, labels = extract(self.method.features, loader, self.info)
            feats.append((gather_in_order(f, self.info), gather_in_order(labels, self.info)))
        module.train(was_training)
        (train_f, train_y), (val_f, val_y) = feats
        top1 = knn_top1(train_f, train_y, val_f, val_y, k=self.k)
        if self.info.is_main:
            append_jsonl(self.path, {"step": step, "epoch": epoch, "knn_top1": top1})
        print0(self.info, f"k-NN: step {step} top1 {top1:.2f}")
        return top1


def _resuming(args) -> bool:
    return args.resume not in ("", "none") and (args.resume != "auto" or
                                                  os.path.isfile(os.path.join(args.output, "last.pth.tar")))


def _run(args, info) -> None:
    final = os.path.join(args.output, "final_backbone.pth")
    if args.resume == "auto" and os.path.isfile(final):
        print0(info, f"{args.output} is complete ({final}); delete it (or pass another --output) to train again")
        return
    batch = local_batch(args, info)
    seed_epoch(args.seed, info.rank, 0)
    backbone = bb.create_backbone(args.arch)
    resuming = _resuming(args)
    if not resuming:
        bb.load_base(backbone, args.base, log=lambda m: print0(info, m), random_init=args.random_init)
    start = "random init" if bb.is_random_init(args.base) else (args.base_name or args.base)
    if args.bn_only:
        bb.train_only_batchnorm(backbone)
    method = build_method(args, info, backbone, batch)
    method.module.to(info.device)
    steps, _ = budget(args)
    if steps != args.iters:
        print0(info, f"BYOL --iters {args.iters} as the published {args.iters}-iters config: {steps} steps of "
                     f"{args.batch_size}x{args.accum_steps} images (--published-schedule false: {args.iters})")
    epoch_updates = max(1, min(steps, args.epoch_updates))
    views = build_views(args.method, args.crop_size, args.mean, args.std, args.aug, args.hue)
    data, loader = build_data(args, info, batch, epoch_updates * args.accum_steps, views)
    per_epoch = math.ceil(len(loader) / args.accum_steps)
    optimizer = build_optimizer(args.optimizer, method.module, args.lr, args.momentum, args.weight_decay,
                                args.lars_eta)
    keep = {args.checkpoint_interval * k for k in range(1, steps // args.checkpoint_interval)} \
        if args.checkpoint_interval else set()

    def at_update(updates: int) -> None:
        if updates in keep and info.is_main:
            save_backbone(method, os.path.join(args.output, f"backbone_{updates}.pth"), args, updates)

    sched = build_schedule(args, optimizer, per_epoch, at_update)
    amp = torch.bfloat16 if args.amp and info.device.type == "cuda" else None
    cfg = RunConfig(run_dir=args.output, arch=args.arch, args=plain_args(args), seed=args.seed,
                    max_updates=steps, accum_steps=args.accum_steps,
                    resume="auto" if args.resume == "auto" else ("" if args.resume == "none" else args.resume),
                    log_interval=args.log_interval, pause_updates=args.pause_updates, amp_dtype=amp,
                    trackers_args=trackers_args(args), checkpoint_hist=1,
                    sync_bn=method.syncs_bn and args.sync_bn,
                    describe=f"hpt {args.method}{' (BN only)' if args.bn_only else ''}: {args.arch} from "
                             f"{start}{' (resumed)' if resuming else ''} on {args.dataset}, {steps} steps of "
                             f"{args.batch_size}x{args.accum_steps} images")
    knn = KnnMonitor(args, info, method) if args.knn_train_list and args.knn_val_list else None
    if knn is not None and not resuming:
        knn(0, -1)
    progress = {"updates": 0}

    def evaluate(epoch: int) -> dict:
        updates = min((epoch + 1) * per_epoch, steps)
        progress["updates"] = updates
        metrics = {"updates": updates}
        if knn is not None:
            metrics["knn_top1"] = knn(updates, epoch)
        return metrics

    fit(cfg, info, method, data, loader, optimizer, sched, evaluate)
    if progress["updates"] >= steps and info.is_main:
        save_backbone(method, final, args, args.iters, steps)
        print0(info, f"wrote {final}")
    distributed.barrier(info)


def save_backbone(method, path: str, args, iters: int, updates: int | None = None) -> None:
    """The backbone's weights (torchvision-style names) and a .json naming the chain it belongs to: `iters`
    the budget as named (<N>-iters), `steps` the optimiser steps trained."""
    from fdsl.engine import checkpoint

    sd = {k: v.detach().cpu().clone() for k, v in method.module.backbone.state_dict().items()}
    checkpoint.save_atomic({"state_dict": sd, "author": "fdsl", "arch": args.arch}, path)
    meta = {"basetrain": args.base_name or bb_name(args.base), "dataset": args.dataset, "iters": iters,
            "steps": iters if updates is None else updates,
            "method": args.method, "bn_only": bool(args.bn_only), "arch": args.arch, "base": args.base or "",
            "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    bb.write_json_atomic(meta, bb.sidecar(path))


def bb_name(base: str) -> str:
    from fdsl.ssl.hpt.records import base_name

    return base_name(base)
