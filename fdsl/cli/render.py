"""`fdsl render <database> --out DIR [options]`: build a formula-driven database."""
from __future__ import annotations

import argparse
import sys
import time

from fdsl.cli.common import Parser
from fdsl.data import builder, registry

EPILOG = """examples:
  fdsl render fractaldb --out data/FractalDB-1k --workers 8
  fdsl render fractaldb --out data/FractalDB-1k --csv-dir official_csvs/ --size 362
  fdsl render onepfrac --out data/1p-frac --delta 0.1
  fdsl render rcdb --out data/RCDB-21k --classes 21000 --format wds --class-range 0:1000
Re-running a command resumes it: complete classes (or shards) are skipped."""


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
                          "RGB for byte-level parity with the published files")
    work = parser.add_argument_group("work split")
    work.add_argument("--workers", "-j", type=int, default=1, help="worker processes (default 1)")
    work.add_argument("--class-range", default=None, metavar="A:B",
                      help="render only classes A..B-1 (split a database across machines or ranks)")
    work.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    plan = builder.BuildPlan(db, args["out"], fmt=args["format"], mode=args["mode"], shard_size=args["shard_size"])
    started = time.perf_counter()
    result = builder.build(plan, workers=args["workers"], class_range=args["class_range"],
                           progress=not args["no_progress"])
    seconds = time.perf_counter() - started
    rate = result["written"] / seconds if seconds > 0 else 0.0
    print(f"{db.name}: wrote {result['written']} images, skipped {result['skipped']} already present, "
          f"in {seconds:.1f} s ({rate:.1f} images/s) -> {plan.out}")
    return 0
