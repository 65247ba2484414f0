"""`fdsl eval-voc` / `python eval_voc_classif.py`: Pascal VOC 2007 classification transfer with the published
eval_voc_classif.py flags (docs/ssl.md): fc6-fc8 (--fc6_8 true) or all layers, BatchNorm frozen, the
difficult labels ignored, lr halved every --stepsize iterations, gradients clipped to norm 10, --nit iterations.
The test passes 10 random crops (--eval_random_crops true) or Resize + TenCrop, sums the scores, and prints
the mAP of the training split and of the test split (val for --split train, test for --split trainval).

fdsl additions: runs through the engine (checkpoints in --dump_path, exact resume, several GPUs); --sobel is
honoured (the published script always built the Sobel front end).
"""
from __future__ import annotations

import sys

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.cli.eval_common import add_launcher_flags, add_run_flags, bool_flag, run_distributed


def build_parser() -> Parser:
    p = Parser(prog="fdsl eval-voc", formatter_class=HelpFormatter, description=__doc__)
    g = p.add_argument_group("published eval_voc_classif.py flags")
    g.add_argument("--pretrained", default="", help="the VGG16 checkpoint (published or fdsl)")
    g.add_argument("--data_path", default="", help="the VOC2007 devkit folder (ImageSets/Main, JPEGImages)")
    g.add_argument("--split", default="train", choices=["train", "trainval"],
                   help="train (tested on val, for hyper-parameter search) or trainval (tested on test)")
    g.add_argument("--sobel", type=bool_flag, default=False, help="Sobel front end (honoured here)")
    g.add_argument("--fc6_8", type=bool_flag, default=True, help="train fc6-fc8 only (false: all layers)")
    g.add_argument("--eval_random_crops", type=bool_flag, default=True,
                   help="test on 10 random crops (false: Resize + TenCrop)")
    g.add_argument("--nit", type=int, default=150000, help="training iterations")
    g.add_argument("--stepsize", type=int, default=10000, help="halve the lr every N iterations")
    g.add_argument("--lr", type=float, default=0.003)
    g.add_argument("--wd", type=float, default=1e-6)
    add_launcher_flags(p)
    g = p.add_argument_group("fdsl additions")
    g.add_argument("--dump_path", default="./exp_voc", help="experiment directory")
    g.add_argument("--batch_size", type=int, default=16, help="batch size per process (published: 16)")
    g.add_argument("--workers", type=int, default=4)
    g.add_argument("--width", type=float, default=1.0, help="VGG16 width multiplier of the checkpoint")
    g.add_argument("--img_size", type=int, default=224, help="crop side")
    g.add_argument("--eval_batch_size", type=int, default=16)
    add_run_flags(p)
    p.set_defaults(seed=1993)  # the published --seed default
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from fdsl.recipes.eval_voc import run  # after parsing: --help and a bad flag answer at once

    return run_distributed(args, run)
