"""Wiring of one run (after FAIR MAE's main_pretrain.py): distributed init, data, model, optimiser,
schedule, resume, the epoch loop, validation, checkpoints and logs. pretrain and finetune differ only in
`args.kind` (finetune validates every epoch and may start from --pretrained-path)."""
from __future__ import annotations

import os
import random
import sys
import time

import numpy as np
import torch
import yaml
from timm.data import Mixup
from timm.loss import JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

from fdsl.engine import checkpoint, distributed, schedule
from fdsl.engine.data import build_train_data, build_val_data, make_loader
from fdsl.engine.logging import Summary, Trackers, print0
from fdsl.engine.loop import LoopContext, NonFiniteLoss, evaluate, train_one_epoch
from fdsl.errors import UserError
from fdsl.models import factory


class TrainingDiverged(UserError):
    pass


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Every RNG is a function of (seed, rank, epoch), so a resumed run replays the same randomness."""
    value = (seed + rank) * 1_000_003 + epoch
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def run_dir_of(args) -> str:
    if getattr(args, "run_dir", None):
        return args.run_dir
    if not args.experiment:
        size = factory.requested_img_size(args) or 224
        args.experiment = f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model.replace('/', '_')}-{size}"
    return os.path.join(args.output, args.experiment)


def plain_args(args) -> dict:
    """args as a dict of plain values: loads with torch.load(weights_only=True) and dumps as YAML."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
            if v is None or isinstance(v, (str, int, float, bool, list, tuple, dict))}


def build_optimizer(args, model):
    kwargs = {}
    if args.opt_eps is not None:
        kwargs["eps"] = args.opt_eps
    if args.opt_betas is not None:
        kwargs["betas"] = tuple(args.opt_betas)
    try:
        return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                                   momentum=args.momentum, **kwargs)
    except (AssertionError, ValueError) as err:
        raise UserError(f"--opt {args.opt}: {err}") from None


def build_loss(args, mixup_active: bool):
    if args.jsd:  # cross-entropy on the clean split + JS divergence across all splits
        return JsdCrossEntropy(num_splits=args.aug_splits, smoothing=args.smoothing)
    if mixup_active:
        return SoftTargetCrossEntropy()
    if args.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=args.smoothing)
    return torch.nn.CrossEntropyLoss()


def build_mixup(args, num_classes: int):
    active = args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None
    if not active:
        return None
    if args.batch_size % 2:
        raise UserError(f"mixup/cutmix need an even --batch-size (got {args.batch_size})")
    return Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, cutmix_minmax=args.cutmix_minmax,
                 prob=args.mixup_prob, switch_prob=args.mixup_switch_prob, mode=args.mixup_mode,
                 label_smoothing=args.smoothing, num_classes=num_classes)


def amp_setup(args, info):
    if not (args.amp or args.native_amp or args.apex_amp):
        return None, None
    if info.device.type != "cuda":
        print0(info, "note: --amp ignored on CPU (float32)")
        return None, None
    dtype = torch.bfloat16 if args.amp_dtype == "bfloat16" else torch.float16
    return dtype, (torch.amp.GradScaler("cuda") if dtype == torch.float16 else None)


def resume(args, path, model, optimizer, scaler, saver, info) -> dict:
    """Restore model, optimiser, scaler and saver state; return the checkpoint."""
    ckpt = checkpoint.load(path)
    sd = checkpoint.unwrap_state_dict(ckpt)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        arch = ckpt.get("arch", "another architecture") if isinstance(ckpt, dict) else "another architecture"
        raise UserError(f"--resume {path} holds {arch} weights that do not fit --model {args.model} "
                        f"({str(err).splitlines()[0][:120]})") from None
    if not args.no_resume_opt and isinstance(ckpt, dict):
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and "amp_scaler" in ckpt:
            scaler.load_state_dict(ckpt["amp_scaler"])
    saver.load_state_dict(ckpt.get("saver") if isinstance(ckpt, dict) else None)
    print0(info, f"resumed from {path} (epoch {ckpt.get('epoch')})")
    return ckpt if isinstance(ckpt, dict) else {}


def report_bad_files(train_data, info, epoch: int) -> None:
    """One line per epoch with the number of unreadable images skipped on all ranks (each also warned)."""
    count, first = train_data.take_bad_files()
    total = int(distributed.all_reduce_sum(torch.tensor(count, device=info.device), info).item())
    if total:
        print0(info, f"warning: epoch {epoch}: skipped {total} unreadable image(s), e.g. {first or 'on another rank'}")


def resume_path(args, run_dir: str) -> str | None:
    if args.resume == "auto":
        path = os.path.join(run_dir, "last.pth.tar")
        return path if os.path.isfile(path) else None
    if args.resume and not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume}: no such file")
    return args.resume or None


def run(args) -> int:
    info = distributed.init(args.device, args.dist_backend, args.dist_timeout)
    failed = True
    try:
        _run(args, info)
        failed = False
        return 0
    except UserError as err:
        text = str(err).strip()
        if "Original Traceback" in text:  # raised in a DataLoader worker: keep the message, drop the traceback
            raise UserError(text.splitlines()[-1].removeprefix("fdsl.errors.UserError: ")) from None
        raise
    except (RuntimeError, torch.distributed.DistError) as err:
        if not info.distributed:
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"rank {info.rank}/{info.world_size}: a peer process failed or stopped answering "
                        f"({first}); see the other ranks' logs") from None
    finally:
        distributed.shutdown(info, failed)


def _run(args, info) -> None:
    finetune = args.kind == "finetune"
    if not finetune and args.eval_metric != "loss":
        raise UserError(f"--eval-metric {args.eval_metric}: pretrain has no validation set; use --eval-metric loss")
    seed_epoch(args.seed, info.rank, 0)
    train_data = build_train_data(args, info)
    num_classes = train_data.num_classes
    model = factory.create(args, num_classes)
    if finetune and args.pretrained_path:
        checkpoint.load_pretrained(model, args.pretrained_path, args.model, log=lambda m: print0(info, m))
    train_data.set_transforms(args, model)
    if args.split_bn:
        from timm.layers import convert_splitbn_model

        model = convert_splitbn_model(model, args.aug_splits)
    val_data = build_val_data(args, info, model, train_data) if finetune else None
    train_loader = make_loader(args, info, train_data)
    val_loader = make_loader(args, info, val_data, train=False) if val_data else None
    iters = len(train_loader)

    schedule.scale_lr(args, args.batch_size * info.world_size)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(info.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(args, model)
    amp_dtype, scaler = amp_setup(args, info)
    run_dir = run_dir_of(args)
    higher = finetune and "loss" not in args.eval_metric
    saver = checkpoint.CheckpointSaver(run_dir, higher, args.checkpoint_hist, args.interval_saved_epochs)
    start_epoch = 0
    path = resume_path(args, run_dir)
    if not path and os.path.isfile(os.path.join(run_dir, "last.pth.tar")):
        raise UserError(f"{run_dir} already holds a run (last.pth.tar); pass --resume auto to continue it, "
                        "or choose another --experiment/--output")
    resumed = resume(args, path, model, optimizer, scaler, saver, info) if path else {}
    done_epoch = resumed.get("epoch")
    if done_epoch is not None:
        start_epoch = done_epoch + 1
    if args.start_epoch is not None:
        start_epoch = args.start_epoch

    ema = None
    if args.model_ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=args.model_ema_decay)
        if "state_dict_ema" in resumed:
            ema.module.load_state_dict(resumed["state_dict_ema"])
    train_model = model
    if info.distributed:
        if args.sync_bn and info.device.type == "cuda":  # SyncBatchNorm runs on CUDA only
            train_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        train_model = torch.nn.parallel.DistributedDataParallel(train_model, device_ids=device_ids)
    if args.torch_compile:
        train_model = torch.compile(train_model)

    sched = schedule.build(args, optimizer, iters)
    sched.fast_forward(start_epoch)
    if not args.no_resume_opt:  # the LR it acts on lives in the optimizer state
        sched.load_state_dict(resumed.get("scheduler"))
    mixup_fn = build_mixup(args, num_classes)
    loss_fn = build_loss(args, mixup_fn is not None)
    total_epochs = args.epochs + args.cooldown_epochs

    summary = trackers = None
    if info.is_main:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "args.yaml"), "w") as f:
            yaml.safe_dump(plain_args(args), f, sort_keys=False)
        summary = Summary(os.path.join(run_dir, "summary.csv"), done_epoch if path else None)
        trackers = Trackers(args, run_dir, info)
    splits = f" x {args.aug_splits} AugMix splits" if args.aug_splits else ""
    print0(info, f"{args.kind}: {args.model} classes={num_classes} train images={len(train_data)} "
                 f"world={info.world_size} ({info.launcher}, {info.device}) batch/process={args.batch_size}{splits} "
                 f"iters/epoch={iters} epochs={start_epoch}..{total_epochs - 1} -> {run_dir}")

    def recovery(epoch, batch_idx):
        last = batch_idx == iters - 1
        if info.is_main and args.recovery_interval and (last or (batch_idx + 1) % args.recovery_interval == 0):
            saver.save_recovery(state(), epoch, batch_idx)

    def state() -> dict:
        out = {"arch": args.model, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
               "version": checkpoint.VERSION, "args": plain_args(args)}
        if scaler is not None:
            out["amp_scaler"] = scaler.state_dict()
        if ema is not None:
            out["state_dict_ema"] = ema.module.state_dict()
        if (sched_state := sched.state_dict()) is not None:
            out["scheduler"] = sched_state
        return out

    ctx = LoopContext(info=info, amp_dtype=amp_dtype, scaler=scaler, mixup_fn=mixup_fn, clip_grad=args.clip_grad,
                      clip_mode=args.clip_mode, log_interval=max(1, args.log_interval),
                      channels_last=args.channels_last, ema=ema, trackers=trackers,
                      on_step=recovery if args.recovery_interval else None, epochs=total_epochs,
                      save_images_dir=run_dir if args.save_images else None)
    try:
        for epoch in range(start_epoch, total_epochs):
            seed_epoch(args.seed, info.rank, epoch)
            train_data.set_epoch(epoch)
            if mixup_fn is not None and args.mixup_off_epoch and epoch >= args.mixup_off_epoch:
                mixup_fn.mixup_enabled = False
            train_metrics = train_one_epoch(train_model, train_loader, optimizer, loss_fn, sched, ctx, epoch)
            report_bad_files(train_data, info, epoch)
            row = {"epoch": epoch, "train_loss": train_metrics["loss"]}
            if val_loader is not None:
                # the unwrapped model: ranks may hold different batch counts, and DDP's forward may sync buffers
                eval_metrics = evaluate(model, val_loader, ctx, num_classes)
                row.update({f"eval_{k}": v for k, v in eval_metrics.items()})
                print0(info, "eval: epoch {} loss {:.4f} top1 {:.2f}".format(epoch, eval_metrics["loss"],
                                                                               eval_metrics["top1"])
                       + (f" top5 {eval_metrics['top5']:.2f}" if "top5" in eval_metrics else ""))
                metric = eval_metrics.get(args.eval_metric.replace("eval_", ""))
                if metric is None:
                    raise UserError(f"--eval-metric {args.eval_metric} is not one of {sorted(eval_metrics)}")
            else:
                metric = train_metrics["loss"]
            sched.after_epoch(epoch, metric)
            if info.is_main:
                summary.append(row)
                trackers.log(dict(row), step=(epoch + 1) * iters)
                saver.save(state(), epoch, metric)
            if args.pause is not None and epoch - start_epoch + 1 >= args.pause:
                print0(info, f"--pause {args.pause}: stopping after epoch {epoch}")
                break
    except NonFiniteLoss as err:
        last = os.path.join(run_dir, "last.pth.tar")
        kept = f"last good checkpoint kept: {last}" if os.path.isfile(last) else "no checkpoint was written yet"
        raise TrainingDiverged(f"{err}; stopping ({kept}); lower --lr or set --clip-grad") from None
    finally:
        if trackers is not None:
            trackers.close()
    if info.is_main and saver.best is not None:
        print0(info, f"done: best {args.eval_metric} {saver.best[1]:.4f} at epoch {saver.best[0]}; {run_dir}")
    sys.stdout.flush()
