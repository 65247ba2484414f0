"""`fdsl deepercluster`: DeeperCluster, DeepCluster and RotNet pre-training (fdsl.ssl.deepercluster) wired
from the published main.py flags: the data set and its two views, the trunk, the clustering rounds, the
cluster sampler, SGD, then the engine's one loop (fdsl.engine.fit)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from fdsl.data.samplers import Resumable, Seeded
from fdsl.engine import fit, schedule
from fdsl.engine.data import TrainLoader
from fdsl.engine.logging import print0
from fdsl.engine.loop import amp_setup
from fdsl.errors import UserError
from fdsl.models.trunk import create_trunk
from fdsl.models.vgg import VGG16Net, load_body
from fdsl.recipes.common import plain_args, spec_of, trackers_args
from fdsl.ssl import data as ssl_data
from fdsl.ssl.clustering import RoundConfig, check_sizes
from fdsl.ssl.deepercluster import MODEL_SEED, DeeperCluster, Layout, published_epoch_images
from fdsl.ssl.sampler import UniformClusterSampler


def epoch_images(choice: str, n: int, layout, global_batch: int) -> int:
    """--epoch_size as a number of images per epoch, a multiple of the global batch."""
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


class ClusterData:
    """The images of a run, as the clustering sees them (`cluster_view`) and as training reads them
    (`train_set`, with pseudo-labels and rotations), the same subset of the source in both."""

    def __init__(self, args, layout: Layout):
        self.source, class_labels, self.described = ssl_data.build_source(spec_of(ssl_data.SourceSpec, args))
        self.indices = ssl_data.subset_indices(len(self.source), args.size_dataset, args.seed)
        self.cluster_view = ssl_data.View(self.source, ssl_data.cluster_transform(args.img_size), self.indices)
        self.train_set = ssl_data.PseudoLabelDataset(
            ssl_data.View(self.source, ssl_data.train_transform(args.img_size), self.indices), layout.rotations)
        if class_labels is not None and self.indices is not None:
            class_labels = class_labels[self.indices]
        self.class_labels = class_labels  # the folders' classes, for the NMI; None without class folders

    def __len__(self) -> int:
        return len(self.cluster_view)


def run(args, info) -> None:
    layout = Layout(args.k, args.super_classes, args.rotnet)
    layout.check()
    fit.seed_epoch(args.seed, info.rank, 0)
    data = ClusterData(args, layout)
    n = len(data)

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
    loader = DataLoader(Seeded(data.train_set), batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.workers, pin_memory=info.device.type == "cuda",
                        persistent_workers=False)
    method = DeeperCluster(trunk, layout, round_cfg, data.cluster_view, data.train_set, sampler.sampler,
                           args.dump_path, info, args.reassignment, args.wd, data.class_labels, data.indices, args.seed,
                           log=lambda m: print0(info, m),
                           published_checkpoint_freq=args.checkpoint_freq if args.published_checkpoint else None)
    method.module.to(info.device)
    optimizer = torch.optim.SGD(method.optimizer_params(), lr=args.lr, momentum=0.9, weight_decay=args.wd)
    method.optimizer = optimizer
    train_loader = TrainLoader(loader, sampler, args.batch_size)
    amp_dtype, scaler = amp_setup(args.amp, args.amp_dtype, info)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    describe = (f"deepercluster ({layout.mode}): {args.arch}{' + Sobel' if args.sobel else ''} on {data.described}, "
                f"{n} images, k={args.k} = {layout.nsc} super-clusters x {layout.k_sub}, "
                f"{layout.super_classes} super-classes, reassignment every {args.reassignment} epoch(s), "
                f"{epoch_size} images/epoch, batch/process={args.batch_size}")
    cfg = fit.RunConfig(
        run_dir=args.dump_path, arch=f"deepercluster-{args.arch}", args=plain_args(args), seed=args.seed,
        epochs=args.nepochs, start_epoch=args.epoch or None, resume=args.resume, pause_epochs=args.pause,
        pause_updates=args.pause_updates, save_every_updates=args.save_every, held_interval=args.checkpoint_freq,
        log_interval=args.log_interval, amp_dtype=amp_dtype, scaler=scaler, sync_bn=args.sync_bn,
        trackers_args=trackers_args(args), describe=describe)
    fit.fit(cfg, info, method, SourceEpochs(sampler, data.source), train_loader, optimizer,
            schedule.Schedule(None, False, len(train_loader)))
