"""`fdsl deepercluster` / `python deepercluster.py`: DeeperCluster, DeepCluster and RotNet pre-training with
the published main.py flags (spec ssl.md A.9), through the engine's one loop (fdsl.engine.fit).

    DeepCluster    --super_classes 1 --rotnet false
    RotNet         --super_classes 4 --k 1 --rotnet true
    DeeperCluster  the rest (published default: --super_classes 4 --rotnet true --k 10000)
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch.utils.data import DataLoader

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
    p = Parser(prog="fdsl deepercluster", formatter_class=HelpFormatter, description=__doc__)
    g = p.add_argument_group("published main.py flags")
    g.add_argument("--checkpoint_freq", type=int, default=1, help="keep held-checkpoint-<epoch>.pth.tar every N epochs")
    g.add_argument("--dump_path", default="./exp", help="experiment directory (checkpoints, logs, clusters/)")
    g.add_argument("--epoch", type=int, default=0, help="first epoch of a fresh run (a resume reads it from the file)")
    g.add_argument("--start_iter", type=int, default=0, help="ignored: a resume reads it from the checkpoint")
    g.add_argument("--pretrained", default="", help="initial VGG16 trunk weights (published or fdsl checkpoint)")
    g.add_argument("--data_path", default="", help="image folder (flat, or with class sub-folders)")
    g.add_argument("--size_dataset", type=int, default=10_000_000, help="images used (a fixed random subset if fewer)")
    g.add_argument("--workers", type=int, default=8, help="data loader workers per process")
    g.add_argument("--sobel", type=bool_flag, default=False, help="fixed Sobel front end")
    g.add_argument("--lr", type=float, default=0.1, help="learning rate (constant, as published)")
    g.add_argument("--wd", type=float, default=1e-5, help="weight decay")
    g.add_argument("--nepochs", type=int, default=100, help="epochs")
    g.add_argument("--batch_size", type=int, default=48, help="batch size per process")
    g.add_argument("--reassignment", type=int, default=3, help="re-cluster every N epochs")
    g.add_argument("--dim_pca", type=int, default=4096, help="PCA dimension (at most the feature size)")
    g.add_argument("--k", type=int, default=10000, help="sub-clusters in all (k / super-clusters each)")
    g.add_argument("--super_classes", type=int, default=4, help="super-classes (4 x super-clusters with rotnet)")
    g.add_argument("--rotnet", type=bool_flag, default=True, help="predict the rotation with the super-class")
    g.add_argument("--warm_restart", type=bool_flag, default=False, help="ignored (unused in the published code)")
    g.add_argument("--use_faiss", type=bool_flag, default=True,
                   help="faiss-gpu for the k-means search on a GPU (false: a torch GEMM); a CPU uses numpy's BLAS")
    g.add_argument("--niter", type=int, default=10, help="k-means iterations")
    add_launcher_flags(p)
    g = p.add_argument_group("data and model (fdsl additions)")
    g.add_argument("--trainshards", default=None, help="webdataset shards instead of --data_path, '/P/S-{000..009}.tar'")
    g.add_argument("--synthetic", default=None, help="render this fdsl database on the fly instead of --data_path")
    g.add_argument("--num_classes", "--num-classes", type=int, default=None, help="classes rendered with --synthetic")
    g.add_argument("--synthetic_instances", type=int, default=10, help="images per class with --synthetic")
    g.add_argument("--synthetic_seed", type=int, default=0)
    g.add_argument("--synthetic_size", type=int, default=None, help="rendered side (default --img_size)")
    g.add_argument("--arch", default="vgg16", help="vgg16 (published) or any timm model (its pooled feature)")
    g.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier (1 = published)")
    g.add_argument("--img_size", type=int, default=224, help="crop side")
    g.add_argument("--epoch_size", default="published",
                   help="images drawn per epoch over all processes: 'published' (main.py: the data set with "
                        "rotnet, a quarter of it without), 'data' (the whole data set), or a number")
    g.add_argument("--sync_bn", type=bool_flag, default=True,
                   help="BatchNorm statistics over all processes' batches (published: apex SyncBN); CUDA only")
    g.add_argument("--empty_clusters", choices=["published", "split"], default="published",
                   help="k-means empty clusters: 'published' (every empty cluster of a pass splits the same "
                        "donor, the published re-seeded pick) or 'split' (each a different donor, by size)")
    g.add_argument("--published_checkpoint", type=bool_flag, default=True,
                   help="also write the published layout each epoch (checkpoint.pth.tar with module.* keys, "
                        "<g>-pred_layer.pth.tar, checkpoints/checkpoint<e>.pth.tar), which the published "
                        "eval scripts and main.py read")
    g.add_argument("--pca_samples", default="published",
                   help="images the PCA is fitted on each round: 'published' (the first D(D-1)/2 images, D the "
                        "feature size: 8.4M for fc7, capped by the data) or a number of random images")
    add_run_flags(p)
    return p


def epoch_images(choice: str, n: int, layout, global_batch: int) -> int:
    """--epoch_size as a number of images per epoch, a multiple of the global batch."""
    from fdsl.ssl.deepercluster import published_epoch_images

    if choice == "published":
        size = published_epoch_images(n, layout, global_batch)
    elif choice == "data":
        size = n // global_batch * global_batch
    elif choice.isdigit():
        size = int(choice) // global_batch * global_batch
    else:
        raise UserError(f"--epoch_size {choice!r}: use published, data or a number of images")
    if size == 0:
        raise UserError(f"one global batch ({global_batch} = --batch_size x processes) is larger than the images "
                        f"per epoch (--epoch_size {choice}, {n} images); lower --batch_size")
    return size


def pca_samples(choice: str) -> int | None:
    if choice == "published":
        return None
    if not choice.isdigit() or int(choice) < 2:
        raise UserError(f"--pca_samples {choice!r}: use published or a number of images (2 or more)")
    return int(choice)


def parse(argv: list[str]):
    args = build_parser().parse_args(argv)
    for name in ("lr", "batch_size", "nepochs", "reassignment", "niter", "img_size", "dim_pca"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive (got {getattr(args, name)})")
    return args


class SourceEpochs:
    """What fit tells about epochs and unreadable files: the sampler's epoch and the folder's skip count."""

    def __init__(self, sampler, source):
        self.sampler = sampler
        self.source = source

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def take_bad_files(self):
        bad = getattr(self.source, "bad_files", None)
        return bad.take() if bad is not None else (0, "")


def _run(args, info) -> None:
    from fdsl.data.samplers import Resumable, Seeded
    from fdsl.engine import fit, schedule
    from fdsl.engine.data import TrainLoader
    from fdsl.engine.logging import print0
    from fdsl.models.trunk import create_trunk
    from fdsl.models.vgg import VGG16Net, load_body
    from fdsl.ssl import data as ssl_data
    from fdsl.ssl.clustering import RoundConfig, check_sizes
    from fdsl.ssl.deepercluster import MODEL_SEED, DeeperCluster, Layout
    from fdsl.ssl.sampler import UniformClusterSampler

    layout = Layout(args.k, args.super_classes, args.rotnet)
    layout.check()
    fit.seed_epoch(args.seed, info.rank, 0)
    source, class_labels, described = ssl_data.build_source(args, info)
    indices = ssl_data.subset_indices(len(source), args.size_dataset, args.seed)
    cluster_view = ssl_data.View(source, ssl_data.cluster_transform(args.img_size), indices)
    train_set = ssl_data.PseudoLabelDataset(ssl_data.View(source, ssl_data.train_transform(args.img_size), indices),
                                            layout.rotations)
    if class_labels is not None and indices is not None:
        class_labels = class_labels[indices]
    n = len(cluster_view)

    torch.manual_seed(MODEL_SEED)  # the published skeleton seed
    trunk = create_trunk(args.arch, args.sobel, args.img_size, args.width)
    check_sizes(RoundConfig(args.k, layout.nsc, args.dim_pca), n, trunk.num_features)
    epoch_size = epoch_images(args.epoch_size, n, layout, args.batch_size * info.world_size)
    if args.pretrained:
        if not isinstance(trunk, VGG16Net):
            raise UserError("--pretrained loads VGG16 checkpoints; use --arch vgg16")
        load_body(trunk, args.pretrained, log=lambda m: print0(info, m))

    round_cfg = RoundConfig(args.k, layout.nsc, args.dim_pca, args.niter, pca_samples(args.pca_samples), args.batch_size,
                            args.workers, args.seed, args.use_faiss, args.empty_clusters)
    sampler = Resumable(UniformClusterSampler(np.zeros(n, np.int64), epoch_size, info.world_size, info.rank,
                                              args.seed, layout.rotations), args.seed, info.rank)
    loader = DataLoader(Seeded(train_set), batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.workers, pin_memory=info.device.type == "cuda",
                        persistent_workers=False)
    method = DeeperCluster(trunk, layout, round_cfg, cluster_view, train_set, sampler.sampler, args.dump_path, info,
                           args.reassignment, args.wd, class_labels, indices, args.seed,
                           log=lambda m: print0(info, m),
                           published_checkpoint_freq=args.checkpoint_freq if args.published_checkpoint else None)
    method.module.to(info.device)
    optimizer = torch.optim.SGD(method.optimizer_params(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    method.optimizer = optimizer
    train_loader = TrainLoader(loader, sampler, args.batch_size)
    amp_dtype, scaler = amp_setup(args.amp, args.amp_dtype, info)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    describe = (f"deepercluster ({layout.mode}): {args.arch}{' + Sobel' if args.sobel else ''} on {described}, "
                f"{n} images, k={args.k} = {layout.nsc} super-clusters x {layout.k_sub}, "
                f"{layout.super_classes} super-classes, reassignment every {args.reassignment} epoch(s), "
                f"{epoch_size} images/epoch, batch/process={args.batch_size}")
    cfg = fit.RunConfig(
        run_dir=args.dump_path, arch=f"deepercluster-{args.arch}", args=plain_args(args), seed=args.seed,
        epochs=args.nepochs, start_epoch=args.epoch or None, resume=args.resume, pause_epochs=args.pause,
        pause_updates=args.pause_updates, save_every_updates=args.save_every, held_interval=args.checkpoint_freq,
        log_interval=args.log_interval, amp_dtype=amp_dtype, scaler=scaler, sync_bn=args.sync_bn,
        trackers_args=args if (args.log_wandb or args.log_tensorboard) else None, describe=describe)
    fit.fit(cfg, info, method, SourceEpochs(sampler, source), train_loader, optimizer,
            schedule.Schedule(None, False, len(train_loader)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_distributed(parse(argv), _run)
