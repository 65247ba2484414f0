"""`fdsl eval-pretrain` / `python eval_pretrain.py`: supervised training of VGG16-BN initialised from the
unsupervised weights, with the published eval_pretrain.py flags (docs/ssl.md): fc6 and fc7 re-initialised
(N(0, 0.01), bias 0.1), a new classifier, SGD, lr x0.1 every 30 epochs, top-1 on DATA/val every epoch.
`--sobel2RGB true` folds the Sobel front end into conv1; `--evaluate true` validates only; `--debug true`
trains on the val split.

Fixed from the published script: --sobel is honoured and the class count comes from the folder. Kept by
default because the published numbers came from them: the sobel2RGB fold leaves taps 3-4 of the 5x5 conv
random (--sobel2RGB_fold exact folds them all), and every epoch reads the images in the same order (a fresh
DistributedSampler each epoch; --reshuffle true draws a new order).
"""
from __future__ import annotations

import sys

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.cli.eval_common import add_launcher_flags, add_run_flags, bool_flag, run_distributed


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from fdsl.recipes.eval_pretrain import run  # after parsing: --help and a bad flag answer at once

    return run_distributed(args, run)
