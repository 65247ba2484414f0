"""What `fdsl study` does with a loaded study: list its runs (--dry-run), write the cluster lists (--emit), or run
the unfinished runs here and write the report."""
from __future__ import annotations

import hashlib
import os
import shlex

import yaml

from fdsl.study import emit, local, report
from fdsl.study.graph import Plan, fill


def save_resolved(study: dict) -> str:
    """STUDY_OUT/study-<hash>.yaml: the study with every --set applied (what --emit's lines load)."""
    text = yaml.safe_dump(study, sort_keys=False, allow_unicode=True)
    path = os.path.join(study["out"], f"study-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml")
    local.write_atomic(path, text)
    return path


def dry_run(study: dict, plan: Plan) -> int:
    for run in plan.order():
        state = "done " if local.read_result(study["out"], run) else "reuse" if local.reused_result(study, run) \
            else "to do"
        print(f"{state}  {run.name}\n         {shlex.join(fill(run, study['out'], 'python'))}")
    return 0


def emit_lists(study: dict, plan: Plan, kind: str, out_dir: str) -> int:
    local.adopt_reused(study, plan)
    for written in emit.emit(kind, study, plan, save_resolved(study), out_dir):
        print(f"wrote {written}")
    return 0


def run_and_report(study: dict, plan: Plan, jobs: int | None, command: str) -> int:
    """Run the unfinished runs JOBS at a time (None: none, the report only), then write the report."""
    code = 0
    if jobs is not None:
        save_resolved(study)
        reused = local.adopt_reused(study, plan)
        if reused:
            print(f"{len(reused)} runs reused from {', '.join(study['reuse'])} (linked into {study['out']}/runs)")
        code = local.run_all(study, plan, jobs)
    # a baseline not run is reported when done; the compute line replays the runs on this run's jobs (or cores)
    text = report.write(study, Plan(study, study["baselines"]), command, jobs or len(os.sched_getaffinity(0)))
    if text is None:
        print(f"no finished fine-tunes in {study['out']} yet: no report")
        return code
    print(text)
    print(f"wrote {study['out']}/report.md, report.csv, report.png")
    return code
