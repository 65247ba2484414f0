"""`fdsl study STUDY.yaml`: pre-training sources x downstream sets x seeds, one recipe; resumable runs, a report."""
from __future__ import annotations

import os
import shlex

from fdsl.cli.common import HelpFormatter, Parser
from fdsl.errors import UserError

EXAMPLES = """\
examples:
  fdsl study studies/digits_effect.yaml                       run what is unfinished, then write the report
  fdsl study studies/digits_effect.yaml --set seeds="0 1" --set rows="scratch fractaldb" --jobs 2
  fdsl study studies/digits_effect.yaml --set vars.split=select --set out=ablation
  fdsl study studies/digits_effect.yaml --dry-run             every run's command line, done or to do
  fdsl study studies/digits_effect.yaml --emit slurm jobs/    SLURM array scripts instead of running here
  fdsl study studies/digits_effect.yaml --report              the report of the finished runs only

A study is sources (scratch, a database built and pre-trained once, a checkpoint file) x downstream sets
(a folder, or a `fdsl data prepare` spec prepared once) x seeds, with one recipe. Every run (a database
build, a pre-training, a fine-tune) is keyed by a hash of its command line and of the runs it reads: a run
is done when STUDY_OUT/results/<run>.json exists; after a crash or kill -9 the same command runs only the
unfinished runs, and a changed recipe value is a new run. The report: STUDY_OUT/report.md, report.csv,
report.png (top-1 mean ± std per cell and the gain over each baseline row, paired by seed). The keys of a
study file: docs/study.md."""


def build_parser() -> Parser:
    p = Parser(prog="fdsl study", formatter_class=HelpFormatter, description=EXAMPLES,
               usage="fdsl study STUDY.yaml [--set KEY=VALUE ...] [--jobs N] [--dry-run | --emit KIND DIR | --report]")
    p.add_argument("study", metavar="STUDY.yaml", help="the study file (examples in studies/)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the study (dotted, YAML value): seeds=\"0 1\", vars.ft_epochs=2, out=DIR")
    p.add_argument("--jobs", type=int, default=0, metavar="N",
                   help="runs at a time, one thread each (0: one per core)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="print every run's command line and state, run none")
    what.add_argument("--emit", nargs=2, metavar=("slurm|mpirun", "DIR"),
                      help="write the unfinished runs as a SLURM array script or an mpirun list in DIR")
    what.add_argument("--report", action="store_true", help="write the report of the finished runs, run none")
    what.add_argument("--run", metavar="NAME", help="run one run by its name (what the emitted lists call)")
    return p


def main(argv: list[str]) -> int:
    from fdsl.study import local, session, spec
    from fdsl.study.graph import Plan

    args = build_parser().parse_args(argv)
    if args.jobs < 0:
        raise UserError(f"--jobs {args.jobs}: give 1 or more (or 0: one per core)")
    if args.emit and args.emit[0] not in ("slurm", "mpirun"):
        raise UserError(f"--emit {args.emit[0]}: give slurm or mpirun, then the folder to write")
    study = spec.load(args.study, args.sets)
    plan = Plan(study)
    if args.run:
        return local.run_one(study, plan, args.run)
    if args.dry_run:
        return session.dry_run(study, plan)
    if args.emit:
        return session.emit_lists(study, plan, *args.emit)
    jobs = None if args.report else (args.jobs or len(os.sched_getaffinity(0)))
    command = shlex.join(["fdsl", "study", args.study, *(f"--set={s}" for s in args.sets)])
    return session.run_and_report(study, plan, jobs, command)
