"""`fdsl eval-linear` / `python eval_linear.py`: a linear probe on frozen conv features with the published
eval_linear.py flags (docs/ssl.md). Image folders (DATA/train, DATA/val) report top-1; Pascal VOC 2007
(a path containing "pascal", or the devkit layout) reports mAP. `--kfold K --cross_valid i` validates on fold i
of the training folder. `--knn true` runs the weighted k-NN probe (k=20, cosine) instead: no training.

Fixed from the published script: --sobel is honoured (it always built the Sobel front end), the class count
comes from the folder (it was 1000 unless the path said "places"), and evaluation is batched.
"""
from __future__ import annotations

import sys

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.cli.eval_common import add_launcher_flags, add_run_flags, bool_flag, run_distributed


def build_parser() -> Parser:
    p = Parser(prog="fdsl eval-linear", formatter_class=HelpFormatter, description=__doc__)
    g = p.add_argument_group("published eval_linear.py flags")
    g.add_argument("--dump_path", default=".", help="experiment directory (checkpoints, summary.csv)")
    g.add_argument("--epoch", type=int, default=0, help="first epoch of a fresh run")
    g.add_argument("--start_iter", type=int, default=0, help="ignored: a resume reads it from the checkpoint")
    g.add_argument("--pretrained", default="", help="the VGG16 checkpoint to probe (published or fdsl)")
    g.add_argument("--conv", type=int, default=1, choices=range(14), metavar="{1..13}",
                   help="conv layer whose output is probed (0: the trunk's final feature)")
    g.add_argument("--data_path", default="", help="DATA with train/ and val/ (or the VOC2007 devkit folder)")
    g.add_argument("--workers", type=int, default=8)
    g.add_argument("--sobel", type=bool_flag, default=False, help="Sobel front end (honoured here)")
    g.add_argument("--lr", type=float, default=0.05, help="initial learning rate (Bottou decay)")
    g.add_argument("--wd", type=float, default=1e-5, help="weight decay")
    g.add_argument("--nepochs", type=int, default=100)
    g.add_argument("--batch_size", type=int, default=64)
    g.add_argument("--split", default="train", choices=["train", "trainval"],
                   help="VOC: train (validated on val) or trainval (tested on test)")
    g.add_argument("--kfold", type=int, default=None, help="folds of the training set for model selection")
    g.add_argument("--cross_valid", type=int, default=None, help="which fold validates (0..kfold-1)")
    add_launcher_flags(p)
    g = p.add_argument_group("model and probe (fdsl additions)")
    g.add_argument("--arch", default="vgg16", help="vgg16, or a timm model (probed on its pooled feature, --conv 0)")
    g.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier of the checkpoint")
    g.add_argument("--img_size", type=int, default=224, help="crop side")
    g.add_argument("--knn", type=bool_flag, default=False, help="weighted k-NN on the pooled features instead")
    g.add_argument("--knn_k", type=int, default=20)
    g.add_argument("--knn_t", type=float, default=0.07, help="k-NN temperature")
    add_run_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from fdsl.recipes.eval_linear import run  # after parsing: --help and a bad flag answer at once

    return run_distributed(args, run)

