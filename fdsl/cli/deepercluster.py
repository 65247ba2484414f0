"""`fdsl deepercluster` / `python deepercluster.py`: DeeperCluster, DeepCluster and RotNet pre-training with
the published main.py flags (docs/ssl.md), through the engine's one loop (fdsl.engine.fit).

    DeepCluster    --super_classes 1 --rotnet false
    RotNet         --super_classes 4 --k 1 --rotnet true
    DeeperCluster  the rest (published default: --super_classes 4 --rotnet true --k 10000)
"""
from __future__ import annotations

import sys

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.cli.eval_common import add_launcher_flags, add_run_flags, bool_flag, run_distributed
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


def parse(argv: list[str]):
    args = build_parser().parse_args(argv)
    for name in ("lr", "batch_size", "nepochs", "reassignment", "niter", "img_size", "dim_pca"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name} must be positive (got {getattr(args, name)})")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    from fdsl.recipes.deepercluster import run  # after parsing: --help and a bad flag answer at once

    return run_distributed(args, run)
