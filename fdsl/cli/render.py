"""`fdsl render <database> --out DIR [options]`: build a formula-driven database."""
from __future__ import annotations

import argparse
import sys
import time

from fdsl import launch
from fdsl.cli.common import Parser
from fdsl.data import builder, estimate, registry
from fdsl.errors import UserError

EPILOG = """examples:
  fdsl render fractaldb --out data/FractalDB-1k --workers 8
  fdsl render fractaldb --out data/FractalDB-1k --csv-dir official_csvs/ --size 362
  fdsl render onepfrac --out data/1p-frac --delta 0.1
  fdsl render rcdb --out data/RCDB-copy --param-dir data/RCDB-1k/param   # the same bytes again
  fdsl render rcdb --out data/RCDB-21k --classes 21000 --format wds --estimate --workers 64
  mpirun -np 8 fdsl render rcdb --out data/RCDB-21k --classes 21000 --format wds --workers 8
  srun -N 4 -n 16 fdsl render visualatom --out data/VisualAtom-21k --classes 21000 --workers 4
Re-running a command resumes it: complete classes (or shards) are skipped. Under mpirun or srun the
ranks split the classes among themselves (see scripts/render_mpi.sh, scripts/render_slurm.sh)."""


def databases_help() -> str:
    lines = ["databases:"]
    for name in registry.names():
        lines.append(f"  {name:<12} {registry.get(name).summary}")
    return "\n".join(lines)


def build_parser(db_cls: type[registry.Database]) -> argparse.ArgumentParser:
    parser = Parser(prog=f"fdsl render {db_cls.name}", description=db_cls.summary, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    out = parser.add_argument_group("output")
    out.add_argument("--out", "--save_root", "--save-root", required=True, metavar="DIR",
                     help="database root folder (created; a re-run resumes it)")
    out.add_argument("--format", choices=("png", "wds"), default="png",
                     help="png: the published folder layout; wds: webdataset tar shards SHARDS-000000.tar...")
    out.add_argument("--shard-size", type=int, default=1000, help="samples per webdataset shard (default 1000)")
    out.add_argument("--mode", choices=("auto", "L", "RGB"), default="auto",
                     help="PNG channels: auto keeps the image's own (gray stays single-channel, 3x cheaper); "
                          "RGB stores three channels as the published files do")
    work = parser.add_argument_group("work split")
    work.add_argument("--workers", "-j", type=int, default=1, help="worker processes (default 1)")
    work.add_argument("--class-range", default=None, metavar="A:B",
                      help="render only classes A..B-1 (under mpirun/srun the ranks split this range)")
    work.add_argument("--no-progress", action="store_true", help="no progress bar")
    work.add_argument("--estimate", action="store_true",
                      help="render a small sample (nothing written) and print images/s per core, the build's "
                           "wall time at --workers x ranks, and its disk size as PNG and as shards")
    work.add_argument("--ranks", type=int, default=None,
                      help="with --estimate: ranks to plan for (default: this launch's, 1 without a launcher)")
    db_cls.add_arguments(parser.add_argument_group(f"{db_cls.name} options"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        print("usage: fdsl render <database> --out DIR [options]   (fdsl render <database> --help)\n")
        print(databases_help())
        print("\n" + EPILOG)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    db_cls = registry.get(argv[0])
    args = vars(build_parser(db_cls).parse_args(argv[1:]))
    options = {key: args.pop(key) for key in db_cls.defaults()}
    db = db_cls(options)
    for note in getattr(db, "param_notes", ()):
        print(f"fdsl render {db.name}: note: {note}", file=sys.stderr)
    plan = builder.BuildPlan(db, args["out"], fmt=args["format"], mode=args["mode"], shard_size=args["shard_size"])
    if args["estimate"]:
        return print_estimate(plan, args)
    ranks = launch.discover()
    started = time.perf_counter()
    result = builder.build(plan, workers=args["workers"], class_range=args["class_range"],
                           progress=not args["no_progress"], launch=ranks)
    seconds = time.perf_counter() - started
    if ranks.distributed:
        return report_ranks(plan, ranks, result, args["class_range"], seconds)
    rate = result["written"] / seconds if seconds > 0 else 0.0
    print(f"{db.name}: wrote {result['written']} images, skipped {result['skipped']} already present, "
          f"in {seconds:.1f} s ({rate:.1f} images/s) -> {plan.out}")
    return 0


def report_ranks(plan: builder.BuildPlan, ranks: launch.Launch, result: dict, class_range: str | None,
                 seconds: float) -> int:
    """Rank 0's final line: the whole build checked after every rank finished."""
    if ranks.rank != 0:
        return 0
    start, stop = builder.parse_class_range(class_range, plan.db.num_classes)
    kind = "classes" if plan.fmt == "png" else "shards"
    missing = result["missing"]
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        print(f"{plan.db.name}: {len(missing)} {kind} of classes {start}-{stop - 1} are incomplete ({shown}); "
              f"re-run the same command to finish them", file=sys.stderr)
        return 1
    print(f"{plan.db.name}: classes {start}-{stop - 1} complete, checked by rank 0 after {ranks.world_size} ranks "
          f"finished in {seconds:.1f} s -> {plan.out}")
    return 0


def print_estimate(plan: builder.BuildPlan, args: dict) -> int:
    found = launch.from_environment()
    if found.rank != 0:
        return 0  # one estimate per launch
    builder.check_options(plan, args["workers"])
    ranks = args["ranks"] or found.world_size
    if ranks < 1:
        raise UserError("--ranks must be at least 1")
    est = estimate.measure(plan, args["class_range"], args["workers"], ranks)
    print(estimate.report(plan.db.name, plan.db.options["size"], est, plan.shard_size))
    return 0
