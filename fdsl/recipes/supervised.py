"""`fdsl pretrain` / `fdsl finetune`: one supervised run (after FAIR MAE's main_pretrain.py): data, model,
optimiser, schedule and the classification method, handed to the shared epoch driver (engine.fit), which runs
the one loop with resume, checkpoints and logs. pretrain and finetune differ only in `args.kind` (finetune
validates every epoch and may start from --pretrained-path)."""
from __future__ import annotations

import dataclasses
import os
import time

import torch
from timm.data import Mixup
from timm.loss import JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2

from fdsl.data import transforms
from fdsl.engine import checkpoint, distributed, fit, schedule
from fdsl.engine.data import DataSpec, build_train_source, build_val_data, val_loader
from fdsl.engine.fit import seed_epoch
from fdsl.engine.logging import print0
from fdsl.engine.loop import LoopContext, amp_setup
from fdsl.engine.loop import evaluate as loop_evaluate
from fdsl.engine.method import Classification
from fdsl.errors import UserError
from fdsl.models import factory
from fdsl.recipes.common import model_spec, plain_args, scale_lr, schedule_spec, spec_of, tracker_spec


def run_dir_of(args) -> str:
    if getattr(args, "run_dir", None):
        return args.run_dir
    if not args.experiment:
        size = model_spec(args).requested_img_size or 224
        args.experiment = f"{time.strftime('%Y%m%d-%H%M%S')}-{args.model.replace('/', '_')}-{size}"
    return os.path.join(args.output, args.experiment)


def data_spec(args) -> DataSpec:
    """The run's data options, typed (what fdsl.engine.data reads)."""
    return dataclasses.replace(spec_of(DataSpec, args), inputs=spec_of(transforms.InputSpec, args),
                               augment=spec_of(transforms.TrainAugment, args))


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


def run(args) -> int:
    return distributed.run(lambda info: _run(args, info), args.device, args.dist_backend, args.dist_timeout)


def run_config(args, run_dir: str, finetune: bool, scaler, amp_dtype, describe: str) -> fit.RunConfig:
    return fit.RunConfig(
        run_dir=run_dir, arch=args.model, args=plain_args(args), seed=args.seed,
        epochs=args.epochs + args.cooldown_epochs, start_epoch=args.start_epoch, resume=args.resume,
        resume_optimizer=not args.no_resume_opt, pause_epochs=args.pause,
        pause_updates=getattr(args, "pause_updates", None), recovery_interval=args.recovery_interval,
        checkpoint_hist=args.checkpoint_hist, held_interval=args.interval_saved_epochs,
        eval_interval=getattr(args, "eval_interval", 1),
        higher_is_better=finetune and "loss" not in args.eval_metric, log_interval=args.log_interval,
        amp_dtype=amp_dtype, scaler=scaler, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
        channels_last=args.channels_last, sync_bn=args.sync_bn, torch_compile=args.torch_compile,
        ema_decay=args.model_ema_decay if args.model_ema else None, save_images=args.save_images,
        trackers_args=tracker_spec(args), describe=describe)


def device_source(args, info):
    """--synthetic-device: the device source, built from its options (fdsl.data.device.options)."""
    from fdsl.data.device.source import build_device_source

    return build_device_source(args, info)


def _run(args, info) -> None:
    finetune = args.kind == "finetune"
    if not finetune and args.eval_metric != "loss":
        raise UserError(f"--eval-metric {args.eval_metric}: pretrain has no validation set; use --eval-metric loss")
    seed_epoch(args.seed, info.rank, 0)
    data = data_spec(args)
    train_data = build_train_source(data, info, lambda: device_source(args, info))
    num_classes = train_data.num_classes
    model = factory.create(model_spec(args), num_classes)
    if finetune and args.pretrained_path:
        checkpoint.load_pretrained(model, args.pretrained_path, args.model, log=lambda m: print0(info, m))
    train_data.set_transforms(data, model)
    if args.split_bn:
        from timm.layers import convert_splitbn_model

        model = convert_splitbn_model(model, args.aug_splits)
    val_data = build_val_data(data, info, train_data) if finetune else None
    train_loader = train_data.loader(data, info)
    val_batches = val_loader(data, info, val_data) if val_data else None

    scale_lr(args, args.batch_size * info.world_size)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(info.device)
    optimizer = build_optimizer(args, model)
    amp_dtype, scaler = amp_setup(args.amp or args.native_amp or args.apex_amp, args.amp_dtype, info)
    sched = schedule.build(schedule_spec(args), optimizer, len(train_loader))
    mixup_fn = build_mixup(args, num_classes)
    method = Classification(model, build_loss(args, mixup_fn is not None), mixup_fn, train_data.device_augment,
                            args.mixup_off_epoch)

    def evaluate(epoch: int) -> dict:
        # the unwrapped model: ranks may hold different batch counts, and DDP's forward may sync buffers
        ctx = LoopContext(info=info, amp_dtype=amp_dtype, channels_last=args.channels_last)
        metrics = loop_evaluate(model, val_batches, ctx, num_classes)
        print0(info, "eval: epoch {} loss {:.4f} top1 {:.2f}".format(epoch, metrics["loss"], metrics["top1"])
               + (f" top5 {metrics['top5']:.2f}" if "top5" in metrics else ""))
        metric = metrics.get(args.eval_metric.replace("eval_", ""))
        if metric is None:
            raise UserError(f"--eval-metric {args.eval_metric} is not one of {sorted(metrics)}")
        return dict(metrics, metric=metric)

    splits = f" x {args.aug_splits} AugMix splits" if args.aug_splits else ""
    describe = (f"{args.kind}: {args.model} classes={num_classes} train images={len(train_data)} "
                f"batch/process={args.batch_size}{splits}")
    cfg = run_config(args, run_dir_of(args), finetune, scaler, amp_dtype, describe)
    fit.fit(cfg, info, method, train_data, train_loader, optimizer, sched, evaluate if val_batches else None)
