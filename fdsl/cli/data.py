"""`fdsl data <sub-command>`: downstream (real-image) data sets. `prepare` writes one as fdsl reads it."""
from __future__ import annotations

import os
import time

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.errors import UserError

PREPARE_HELP = """\
Writes a downstream data set from files you already have (nothing is downloaded):
  OUT/train/<class>/*.png   training images (all, or --per-class N of each class)
  OUT/val/<class>/*.png     --val-from-train K: K training images per class held out, disjoint from train/;
                            choose the recipe, epochs and checkpoint on these
  OUT/test/<class>/*.png    the data set's own test split, written whole. Never choose anything on it:
                            report on it once (fdsl finetune OUT ... --val-split test)
  OUT/classes.txt, OUT/manifest.json   class folders in label order; source, options, seed, counts per split
Class folders are '<index>_<label name>' with a zero-padded index (e.g. 0_t-shirt_top ... 9_ankle_boot;
digits are just 0 ... 9), so fdsl's natural sort and a plain sort both give the data set's own label order;
an image folder keeps its class names. --format wds writes OUT/<split>/SHARDS-000000.tar instead (for
fdsl pretrain -w; training shards in a seeded random order).

NAME and where it is read from (--from):
  mnist, fashion-mnist  the four idx files (.gz or not): train-images-idx3-ubyte, train-labels-idx1-ubyte,
                        t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; default folder
                        /usr/share/datasets/<name> (apt-get install dataset-fashion-mnist puts them there)
  cifar10, cifar100     cifar-10-python.tar.gz / cifar-100-python.tar.gz, the folder holding it, or the
                        folder it unpacks to; CIFAR-100 with its 100 fine labels (--labels coarse: 20)
  folder                DIR/<class>/<image>, or DIR/train/... with DIR/test/ (or val/) as the test split;
                        images are copied unchanged

OUT is written under a temporary name beside it and renamed when complete. The same command again says
it is done; other options over a finished OUT are refused."""


def build_parser() -> Parser:
    p = Parser(prog="fdsl data", formatter_class=HelpFormatter,
               description="Downstream (real-image) data sets for fine-tuning.")
    sub = p.add_subparsers(dest="command", metavar="SUB-COMMAND", parser_class=Parser)
    sub.required = True
    q = sub.add_parser("prepare", help="write a downstream data set as image folders (or shards)",
                       prog="fdsl data prepare", formatter_class=HelpFormatter, description=PREPARE_HELP)
    q.add_argument("name", metavar="NAME", help="mnist, fashion-mnist, cifar10, cifar100 or folder")
    q.add_argument("--out", required=True, help="output folder: absent, empty, or this same data set (then nothing is done)")
    q.add_argument("--from", dest="source", default=None,
                   help="the files to read, see above (None: /usr/share/datasets/NAME for mnist and fashion-mnist)")
    q.add_argument("--format", choices=["png", "wds"], default="png",
                   help="image folders, or webdataset shards (<key>.png + <key>.cls)")
    q.add_argument("--per-class", type=int, default=None, metavar="N",
                   help="keep N training images per class, a subset fixed by --seed (None: all)")
    q.add_argument("--val-from-train", type=int, default=0, metavar="K",
                   help="hold out K training images per class as val/ (disjoint from train/); 0: no val/")
    q.add_argument("--seed", type=int, default=0, help="seed of the --per-class and --val-from-train draws")
    q.add_argument("--labels", choices=["fine", "coarse"], default=None, help="cifar100 only (None: fine)")
    q.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help="--format wds: samples per shard (None: 10000)")
    return p


def options(args):
    """The checked options of `fdsl data prepare` (fdsl.data.downstream.prepare.Options)."""
    from fdsl.data.downstream import NAMES, default_source
    from fdsl.data.downstream.prepare import Options

    if args.name not in NAMES:
        raise UserError(f"unknown data set {args.name!r}; choose one of: {', '.join(NAMES)}")
    if args.per_class is not None and args.per_class < 1:
        raise UserError(f"--per-class {args.per_class}: give 1 or more (or leave it out for every image)")
    if args.val_from_train < 0:
        raise UserError(f"--val-from-train {args.val_from_train}: give 0 or more")
    if args.labels is not None and args.name != "cifar100":
        raise UserError(f"--labels is for cifar100 (fine or coarse labels); drop it for {args.name}")
    if args.shard_size is not None and (args.format != "wds" or args.shard_size < 1):
        raise UserError("--shard-size N (N >= 1) goes with --format wds")
    source = args.source or default_source(args.name) or ""
    return Options(args.name, os.path.abspath(source) if source else "", args.format, args.per_class,
                   args.val_from_train, args.seed, args.labels or ("fine" if args.name == "cifar100" else None),
                   args.shard_size or (10000 if args.format == "wds" else None))


def summary(done: dict) -> str:
    counts = " / ".join(f"{split} {n:,}" for split, n in done["counts"].items())
    return f"{counts} images, {len(done['classes'])} classes"


def next_steps(out: str, done: dict) -> str:
    if "shards" in done:
        last = done["shards"]["train"] - 1
        return (f"pre-train on it: fdsl pretrain -w --trainshards '{out}/train/SHARDS-{{000000..{last:06d}}}.tar' "
                f"--num-classes {len(done['classes'])} --dataset_size {done['counts']['train']} ...")
    val = "validates on val/" if "val" in done["counts"] else "no val/: add --val-from-train K to choose a recipe"
    return f"fine-tune: fdsl finetune {out} ... ({val}); report on test/ once with --val-split test"


def prepare(args) -> int:
    from fdsl.data.downstream import open_source
    from fdsl.data.downstream.prepare import finished, prepare

    opts = options(args)
    done = finished(args.out, opts)
    if done is not None:
        print(f"{args.out} is already prepared with these options ({summary(done)}); nothing to do")
        return 0
    start = time.perf_counter()
    source = open_source(opts.name, opts.source or None, opts.labels)
    done = prepare(source, opts, args.out)
    print(f"{opts.name} -> {args.out}: {summary(done)} ({time.perf_counter() - start:.1f} s)")
    print(next_steps(args.out, done))
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return {"prepare": prepare}[args.command](args)
