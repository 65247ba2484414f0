"""`fdsl mean-std FOLDER`: per-channel pixel mean/std of a data set, for the HPT project YAML."""
from __future__ import annotations

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.errors import UserError


def build_parser() -> Parser:
    p = Parser(prog="fdsl mean-std", formatter_class=HelpFormatter,
               description="Per-channel pixel mean and std (0-1 scale) of every image under FOLDER (any depth), "
                           "or of the images of an image list. Each image counts once, at its own size.")
    p.add_argument("folder", nargs="?", help="image folder (recursive)")
    p.add_argument("--list", help="an image list (`relpath [label]`) instead of a folder")
    p.add_argument("--root", help="folder the --list paths are relative to (default: the list's folder)")
    p.add_argument("--data", dest="data_alias", help="same as FOLDER (the published script's flag)")
    p.add_argument("--numworkers", "--workers", dest="workers", type=int, default=8, help="loader processes")
    p.add_argument("--batchsize", "--batch-size", dest="batch_size", type=int, default=256, help="images per batch")
    p.add_argument("--numbatches", "--num-batches", dest="num_batches", type=int, default=-1,
                   help="sample this many shuffled batches (-1: every image)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled estimate")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    folder = args.folder or args.data_alias
    if args.list:
        from fdsl.data.image_list import read_list

        paths = [p for p, _ in read_list(args.list, args.root)[0]]
        source = args.list
    elif folder:
        from fdsl.data.folder import scan

        paths = [p for p, _ in scan(folder)[0]]
        source = folder
    else:
        raise UserError("give FOLDER (or --list LIST); see fdsl mean-std --help")
    from fdsl.data.stats import mean_std

    out = mean_std(paths, args.workers, args.batch_size, args.num_batches, args.seed, not args.no_progress)
    print(f"{source}: {out['images']} images")
    print(f"means: {_fmt(out['mean'])}")
    print(f"vars:  {_fmt(out['var'])}")
    print(f"stds:  {_fmt(out['std'])}")
    print(f"# for the HPT project YAML:\nmean: {_fmt(out['mean'])}\nstd: {_fmt(out['std'])}")
    return 0
