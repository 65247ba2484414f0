"""`fdsl eval-pretrain`: supervised training of VGG16-BN initialised from unsupervised weights: the image
folders, the network with fc6/fc7 re-initialised and a new classifier, SGD with step decay, then the engine's
one loop (fdsl.engine.fit)."""
from __future__ import annotations

import os

import torch
from torch import nn

from fdsl.engine.loop import amp_setup
from fdsl.errors import UserError
from fdsl.recipes.common import plain_args, trackers_args


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


def run(args, info) -> None:
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
        trackers_args=trackers_args(args), describe=describe)
    epochs = ed.Epochs(loader) if args.reshuffle else SameOrder(loader)
    fit.fit(cfg, info, Classification(model, nn.CrossEntropyLoss()), epochs, loader, optimizer,
            StepDecay(optimizer, args.lr, args.lr_step, 0.1, per_iteration=False), evaluate)
