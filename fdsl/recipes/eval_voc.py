"""`fdsl eval-voc`: Pascal VOC 2007 classification transfer of a VGG16: the VOC splits, the network
(fdsl.eval.voc.VOCClassifier), SGD with the lr halved every --stepsize iterations, the engine's one loop
(fdsl.engine.fit), then the 10-crop test of both splits."""
from __future__ import annotations

import torch

from fdsl.engine.loop import amp_setup
from fdsl.engine.method import Classification
from fdsl.errors import UserError
from fdsl.recipes.common import plain_args, trackers_args


class CountedClassification(Classification):
    """Classification that remembers the last optimiser step, so the test runs only once training is done."""

    updates = 0

    def after_update(self, num_updates: int, ctx) -> None:
        self.updates = num_updates


def ten_random_crops_scores(model, dataset, args, info, autocast, transform):
    """Scores summed over 10 passes of random resized crops + flips (seeded per pass)."""
    from fdsl.eval import data as ed

    total = labels = None
    saved = dataset.transform
    dataset.transform = transform
    try:
        for crop in range(10):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed * 100 + crop)
                scores, labels = ed.predict(model, dataset, args.eval_batch_size, args.workers, info, autocast)
            total = scores if total is None else total + scores
    finally:
        dataset.transform = saved
    return total, labels


def run(args, info) -> None:
    from fdsl.engine import fit
    from fdsl.engine.logging import print0
    from fdsl.eval import data as ed
    from fdsl.eval.linear_conv import StepDecay
    from fdsl.eval.voc import VOC2007, VOCClassifier, masked_bce, voc_map
    from fdsl.models.vgg import create_vgg16, load_body

    if not args.data_path:
        raise UserError("--data_path: pass the VOC2007 folder (ImageSets/Main/<class>_<split>.txt, JPEGImages/)")
    fit.seed_epoch(args.seed, info.rank, 0)
    size = args.img_size
    train_set = VOC2007(args.data_path, args.split, ed.train_transform(size))
    test_split = "val" if args.split == "train" else "test"
    test_set = VOC2007(args.data_path, test_split, ed.train_transform(size))
    torch.manual_seed(args.seed)
    net = create_vgg16(sobel=args.sobel, relu=True, img_size=size, width=args.width)
    if args.pretrained:
        load_body(net, args.pretrained, strict_classifier=False, log=lambda m: print0(info, m))
    else:
        print0(info, "note: no --pretrained: transferring a randomly initialised VGG16")
    model = VOCClassifier(net, fc6_8=args.fc6_8).to(info.device)
    loader = ed.train_loader(train_set, args.batch_size, args.workers, info, args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.wd)
    amp_dtype, scaler = amp_setup(args.amp, args.amp_dtype, info)
    autocast = (lambda: torch.autocast(info.device.type, dtype=amp_dtype)) if amp_dtype else None
    describe = (f"eval-voc: VGG16{' + Sobel' if args.sobel else ''} {'fc6-8' if args.fc6_8 else 'all layers'} on "
                f"VOC2007 {args.split} ({len(train_set)} images), test on {test_split} ({len(test_set)}), "
                f"{args.nit} iterations, batch/process={args.batch_size}")
    cfg = fit.RunConfig(
        run_dir=args.dump_path, arch=f"voc-vgg16-{'fc6_8' if args.fc6_8 else 'all'}", args=plain_args(args),
        seed=args.seed, epochs=1, max_updates=args.nit, resume=args.resume, pause_epochs=args.pause,
        pause_updates=args.pause_updates, save_every_updates=args.save_every, checkpoint_hist=1,
        log_interval=args.log_interval, amp_dtype=amp_dtype, scaler=scaler, clip_grad=10.0,
        trackers_args=trackers_args(args), describe=describe)
    method = CountedClassification(model, masked_bce)
    fit.fit(cfg, info, method, ed.Epochs(loader), loader, optimizer, StepDecay(optimizer, args.lr, args.stepsize, 0.5))
    if 0 < method.updates < args.nit:
        return  # paused before the end (--pause/--pause_updates or a signal): the resumed run tests

    results = {}
    for name, dataset in (("train", VOC2007(args.data_path, args.split)), (test_split, test_set)):
        if args.eval_random_crops:
            scores, labels = ten_random_crops_scores(model, dataset, args, info, autocast, ed.train_transform(size))
        else:
            dataset.transform = ed.ten_crop_transform(size)
            scores, labels = ed.predict(model, dataset, args.eval_batch_size, args.workers, info, autocast)
        value, aps = voc_map(scores.numpy(), labels.numpy())
        results[name] = value
        print0(info, f"{name} mAP {value:.2f}; per class " + " ".join(f"{a:.1f}" for a in aps))
    print0(info, f"done: VOC07 {args.split} -> {test_split} mAP {results[test_split]:.2f} "
                 f"({'10 random crops' if args.eval_random_crops else '10 crops'}); {args.dump_path}")
