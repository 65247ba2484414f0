"""`fdsl eval-pretrain` / `python eval_pretrain.py`: supervised training of VGG16-BN initialised from the
unsupervised weights, with the published eval_pretrain.py flags (spec ssl.md A.10): fc6 and fc7 re-initialised
(N(0, 0.01), bias 0.1), a new classifier, SGD, lr x0.1 every 30 epochs, top-1 on DATA/val every epoch.
`--sobel2RGB true` folds the Sobel front end into conv1; `--evaluate true` validates only; `--debug true`
trains on the val split.

Fixed from the published script: --sobel is honoured and the class count comes from the folder. Kept by
default because the published numbers came from them: the sobel2RGB fold leaves taps 3-4 of the 5x5 conv
random (--sobel2RGB_fold exact folds them all), and every epoch reads the images in the same order (a fresh
DistributedSampler each epoch; --reshuffle true draws a new order).
"""
from __future__ import annotations

import os
import sys

import torch
from torch import nn

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.cli.eval_common import (
    add_launcher_flags,
    add_run_flags,
    bool_flag,
    run_distributed,
)
from fdsl.engine.checkpoint import plain_args
from fdsl.engine.loop import amp_setup
from fdsl.errors import UserError


def build_parser() -> Parser:
    p = Parser(prog="fdsl eval-pretrain", formatter_class=HelpFormatter, description=__doc__)
    g = p.add_argument_group("published eval_pretrain.py flags")
    g.add_argument("--dump_path", default=".", help="experiment directory")
    g.add_argument("--epoch", type=int, default=0, help="first epoch of a fresh run")
    g.add_argument("--start_iter", type=int, default=0, help="ignored: a resume reads it from the checkpoint")
    g.add_argument("--checkpoint_freq", type=int, default=20, help="keep held-checkpoint-<epoch>.pth.tar every N")
    g.add_argument("--evaluate", type=bool_flag, default=False, help="validate only")
    g.add_argument("--sobel", type=bool_flag, default=False)
    g.add_argument("--sobel2RGB", type=bool_flag, default=False, help="fold the Sobel front end into conv1")
    g.add_argument("--sobel2RGB_fold", choices=["published", "exact"], default="published",
                   help="published: as the published script, only taps [0:3, 0:3] of the 5x5 conv are folded and "
                        "rows/columns 3-4 stay random; exact: the whole composition")
    g.add_argument("--pretrained", default="", help="the unsupervised VGG16 checkpoint (published or fdsl)")
    g.add_argument("--data_path", default="", help="DATA with train/ and val/")
    g.add_argument("--workers", type=int, default=8)
    g.add_argument("--lr", type=float, default=0.05)
    g.add_argument("--wd", type=float, default=1e-5)
    g.add_argument("--nepochs", type=int, default=100)
    g.add_argument("--batch_size", type=int, default=128)
    g.add_argument("--debug", type=bool_flag, default=False, help="train on the val split")
    add_launcher_flags(p)
    g = p.add_argument_group("fdsl additions")
    g.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier of the checkpoint")
    g.add_argument("--img_size", type=int, default=224, help="crop side")
    g.add_argument("--lr_step", type=int, default=30, help="epochs between the x0.1 lr steps")
    g.add_argument("--reshuffle", type=bool_flag, default=False,
                   help="a new sample order every epoch (published: a fresh DistributedSampler each epoch, so the "
                        "same order every epoch)")
    add_run_flags(p)
    p.set_defaults(seed=35)  # the published --seed default
    return p


class VGGClassifier(nn.Module):
    """VGG16-BN (relu=True) + a new classifier layer."""

    def __init__(self, net, num_classes: int):
        super().__init__()
        self.net = net
        self.pred_layer = nn.Linear(net.num_features, num_classes)

    def forward(self, x):
        return self.pred_layer(self.net(x))


class SameOrder:
    """The published sample order: epoch 0's permutation every epoch; the augmentations still change."""

    def __init__(self, loader):
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        resumable = self.loader.sampler  # fdsl.data.samplers.Resumable: augmentation seeds per epoch
        resumable.set_epoch(epoch)
        resumable.sampler.set_epoch(0)


def _run(args, info) -> None:
    from fdsl.data.folder import ImageFolder, find_split
    from fdsl.data.samplers import ShardSampler
    from fdsl.engine import fit
    from fdsl.engine.logging import print0
    from fdsl.engine.loop import LoopContext
    from fdsl.engine.loop import evaluate as loop_evaluate
    from fdsl.engine.method import Classification
    from fdsl.eval import data as ed
    from fdsl.eval.linear_conv import StepDecay
    from fdsl.models.vgg import create_vgg16, load_body, sobel2rgb

    if not args.data_path or not os.path.isdir(args.data_path):
        raise UserError(f"--data_path {args.data_path!r} is not a folder (DATA/train, DATA/val)")
    val_root = find_split(args.data_path, "val")
    if val_root == args.data_path:
        raise UserError(f"{args.data_path} has no val/ (or validation/) folder")
    train_root = val_root if args.debug else find_split(args.data_path, "train")
    fit.seed_epoch(args.seed, info.rank, 0)
    train_set = ImageFolder(train_root, ed.train_transform(args.img_size))
    val_set = ImageFolder(val_root, ed.eval_transform(args.img_size), train_set.classes)
    torch.manual_seed(args.seed)
    net = create_vgg16(sobel=args.sobel, relu=True, img_size=args.img_size, width=args.width)
    if args.pretrained:
        load_body(net, args.pretrained, strict_classifier=False, log=lambda m: print0(info, m))
    if args.sobel2RGB:
        sobel2rgb(net, published=args.sobel2RGB_fold == "published")
    for m in net.body.classifier.modules():  # fc6 and fc7 start afresh
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.constant_(m.bias, 0.1)
    model = VGGClassifier(net, len(train_set.classes)).to(info.device)
    amp_dtype, scaler = amp_setup(args.amp, args.amp_dtype, info)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size, num_workers=args.workers,
                                             sampler=ShardSampler(len(val_set), info.world_size, info.rank))

    def evaluate(epoch: int) -> dict:
        metrics = loop_evaluate(model, val_loader, LoopContext(info=info, amp_dtype=amp_dtype), len(train_set.classes))
        print0(info, f"eval: epoch {epoch} loss {metrics['loss']:.4f} top1 {metrics['top1']:.2f}")
        return dict(metrics, metric=metrics["top1"])

    if args.evaluate:
        last = os.path.join(args.dump_path, "last.pth.tar")
        if os.path.isfile(last):
            from fdsl import checkpoint_io as checkpoint

            model.load_state_dict(checkpoint.unwrap_state_dict(checkpoint.load(last)))
            print0(info, f"evaluating {last}")
        evaluate(-1)
        return
    loader = ed.train_loader(train_set, args.batch_size, args.workers, info, args.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    describe = (f"eval-pretrain: VGG16{' + Sobel' if args.sobel and not args.sobel2RGB else ''} from "
                f"{args.pretrained or 'random init'}, {len(train_set.classes)} classes, {len(train_set)} train / "
                f"{len(val_set)} val images, batch/process={args.batch_size}")
    cfg = fit.RunConfig(
        run_dir=args.dump_path, arch="vgg16-classifier", args=plain_args(args), seed=args.seed, epochs=args.nepochs,
        start_epoch=args.epoch or None, resume=args.resume, pause_epochs=args.pause,
        pause_updates=args.pause_updates, save_every_updates=args.save_every, held_interval=args.checkpoint_freq,
        higher_is_better=True, log_interval=args.log_interval, amp_dtype=amp_dtype, scaler=scaler,
        trackers_args=args if (args.log_wandb or args.log_tensorboard) else None, describe=describe)
    epochs = ed.Epochs(loader) if args.reshuffle else SameOrder(loader)
    fit.fit(cfg, info, Classification(model, nn.CrossEntropyLoss()), epochs, loader, optimizer,
            StepDecay(optimizer, args.lr, args.lr_step, 0.1, per_iteration=False), evaluate)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_distributed(build_parser().parse_args(argv), _run)
