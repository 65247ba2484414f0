"""`fdsl eval-linear`: a linear probe (or the weighted k-NN probe) on a frozen conv layer of a trunk: the
image folders or VOC2007, the trunk from --pretrained, the probe (fdsl.eval.linear_conv), SGD with the Bottou
decay, then the engine's one loop (fdsl.engine.fit)."""
from __future__ import annotations

import os

import torch

from fdsl.engine.loop import amp_setup
from fdsl.errors import UserError
from fdsl.recipes.common import plain_args, trackers_args


def is_voc(path: str) -> bool:
    return "pascal" in path.lower() or any(os.path.isdir(os.path.join(path, *sub, "ImageSets", "Main")) for sub in
                                           ((), ("VOC2007",), ("VOCdevkit", "VOC2007")))


def build_trunk(args, info, need_classifier: bool):
    from fdsl.engine.logging import print0
    from fdsl.models.trunk import create_trunk
    from fdsl.models.vgg import VGG16Net, load_body

    trunk = create_trunk(args.arch, args.sobel, args.img_size, args.width)
    if args.pretrained:
        if not isinstance(trunk, VGG16Net):
            raise UserError("--pretrained loads VGG16 checkpoints; use --arch vgg16")
        load_body(trunk, args.pretrained, strict_classifier=need_classifier, log=lambda m: print0(info, m))
    else:
        print0(info, "note: no --pretrained: probing a randomly initialised trunk")
    return trunk


def datasets(args):
    """(train set, train set with the test transform, validation set, number of classes, multi-label?)."""
    from fdsl.data.folder import ImageFolder, find_split
    from fdsl.eval import data as ed
    from fdsl.eval.linear_conv import kfold_split
    from fdsl.eval.voc import VOC2007

    if not args.data_path or not os.path.isdir(args.data_path):
        raise UserError(f"--data_path {args.data_path!r} is not a folder")
    size = args.img_size
    if is_voc(args.data_path):
        test_split = "val" if args.split == "train" else "test"
        return (VOC2007(args.data_path, args.split, ed.train_transform(size)), None,
                VOC2007(args.data_path, test_split, ed.eval_transform(size)), 20, True)
    train_root = find_split(args.data_path, "train")
    train = ImageFolder(train_root, ed.train_transform(size))
    if args.kfold is not None or args.cross_valid is not None:
        if args.kfold is None or args.cross_valid is None or not 0 <= args.cross_valid < args.kfold:
            raise UserError("--kfold K needs --cross_valid i with 0 <= i < K (and the other way round)")
        train_idx, val_idx = kfold_split(train.targets, args.kfold, args.cross_valid, args.seed)
        plain_train = ImageFolder(train_root, ed.eval_transform(size), train.classes)
        return (ed.subset(train, train_idx), ed.subset(plain_train, train_idx), ed.subset(plain_train, val_idx),
                len(train.classes), False)
    val_root = find_split(args.data_path, "val")
    if val_root == args.data_path:
        raise UserError(f"{args.data_path} has no val/ (or validation/) folder; add one, or use --kfold K "
                        "--cross_valid i to validate on a fold of the training images")
    return (train, ImageFolder(train_root, ed.eval_transform(size), train.classes),
            ImageFolder(val_root, ed.eval_transform(size), train.classes), len(train.classes), False)


def run(args, info) -> None:
    from fdsl.engine import fit
    from fdsl.engine.logging import print0
    from fdsl.engine.method import Classification
    from fdsl.eval import data as ed
    from fdsl.eval.linear_conv import BottouSchedule, ConvProbe, top1
    from fdsl.eval.voc import masked_bce, voc_map
    from fdsl.models.vgg import VGG16Net

    fit.seed_epoch(args.seed, info.rank, 0)
    train_set, train_plain, val_set, num_classes, multilabel = datasets(args)
    conv = args.conv or None
    trunk = build_trunk(args, info, need_classifier=conv is None)
    if conv is not None and not isinstance(trunk, VGG16Net):
        raise UserError(f"--conv {args.conv} taps VGG16 convs; with --arch {args.arch} use --conv 0")
    probe = ConvProbe(trunk, num_classes, conv)
    probe.to(info.device)
    amp_dtype, scaler = amp_setup(args.amp, args.amp_dtype, info)
    autocast = (lambda: torch.autocast(info.device.type, dtype=amp_dtype)) if amp_dtype else None
    where = f"conv{conv}" if conv else "the final feature"

    if args.knn:
        from fdsl.eval.knn import knn_top1

        if multilabel:
            raise UserError("--knn reports top-1 on single-label folders, not on VOC")
        train_f, train_y = ed.predict(probe.features, train_plain, args.batch_size, args.workers, info, autocast)
        val_f, val_y = ed.predict(probe.features, val_set, args.batch_size, args.workers, info, autocast)
        acc = knn_top1(train_f, train_y, val_f, val_y, k=args.knn_k, temperature=args.knn_t)
        print0(info, f"k-NN (k={args.knn_k}, T={args.knn_t}) on {where} ({probe.dim} dims): top-1 {acc:.2f}")
        return

    loader = ed.train_loader(train_set, args.batch_size, args.workers, info, args.seed)
    optimizer = torch.optim.SGD(probe.linear.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    method = Classification(probe, masked_bce if multilabel else torch.nn.CrossEntropyLoss())

    def evaluate(epoch: int) -> dict:
        logits, labels = ed.predict(probe, val_set, args.batch_size, args.workers, info, autocast)
        if multilabel:
            value, _ = voc_map(logits.numpy(), labels.numpy())
            print0(info, f"eval: epoch {epoch} mAP {value:.2f}")
            return {"mAP": value, "metric": value}
        value = top1(logits, labels)
        loss = torch.nn.functional.cross_entropy(logits, labels).item() if len(labels) else 0.0
        print0(info, f"eval: epoch {epoch} loss {loss:.4f} top1 {value:.2f}")
        return {"loss": loss, "top1": value, "metric": value}

    describe = (f"eval-linear: {args.arch} {where} ({probe.dim} dims after pooling) -> {num_classes} "
                f"{'labels (mAP)' if multilabel else 'classes (top-1)'}, {len(train_set)} train / {len(val_set)} "
                f"val images, batch/process={args.batch_size}")
    cfg = fit.RunConfig(
        run_dir=args.dump_path, arch=f"linear-probe-{args.arch}-conv{args.conv}", args=plain_args(args), seed=args.seed,
        epochs=args.nepochs, start_epoch=args.epoch or None, resume=args.resume, pause_epochs=args.pause,
        pause_updates=args.pause_updates, save_every_updates=args.save_every, checkpoint_hist=1,
        higher_is_better=True, log_interval=args.log_interval, amp_dtype=amp_dtype, scaler=scaler,
        trackers_args=trackers_args(args), describe=describe)
    row = fit.fit(cfg, info, method, ed.Epochs(loader), loader, optimizer,
                  BottouSchedule(optimizer, args.lr, args.wd), evaluate)
    if row:
        name = "mAP" if multilabel else "top1"
        print0(info, f"done: {name} {row.get('eval_' + name, float('nan')):.2f} on {where}; {args.dump_path}")
