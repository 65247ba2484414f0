"""`fdsl study STUDY --emit slurm|mpirun DIR`: the study's unfinished runs as job lists for a cluster instead of
running them here. Every line is `python -m fdsl study STUDY_OUT/study.yaml --run NAME`, which runs one run
exactly as the local runner does (and does nothing when it is done), so the two can be mixed and re-submitted.
Runs are grouped in stages by dependency depth (data sets and databases, then pre-trainings, then fine-tunes):
the runs of a stage are independent of each other.

    DIR/stage<k>.txt   one command per line, the runs of stage k
    DIR/study.slurm    a SLURM array job: task i runs line i+1 of the list it is given
    DIR/submit.sh      sbatch's each stage as an array after the previous one ended well (afterok)
    DIR/mpirun.txt     `mpirun -np 1 ...` per run, stage by stage (`# stage k` lines between)
"""
from __future__ import annotations

import os
import shlex
import sys

from fdsl.study.graph import Plan
from fdsl.study.local import read_result, write_atomic

SLURM = """#!/bin/bash
# One run of a study per array task: task i runs line i+1 of LIST (see submit.sh). Add your partition, account
# and GPU request (#SBATCH --gres=gpu:1) here; the runs themselves need nothing else.
#SBATCH --job-name={name}
#SBATCH --ntasks=1
#SBATCH --output={out}/logs/slurm-%A_%a.out
set -euo pipefail
LIST=$1
eval "$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$LIST")"
"""


def stages(plan: Plan, root: str) -> list[list[str]]:
    """The unfinished runs' names, by stage."""
    by_depth: dict[int, list[str]] = {}
    for run in plan.order():
        if not read_result(root, run):
            by_depth.setdefault(plan.depth(run), []).append(run.name)
    return [by_depth[d] for d in sorted(by_depth)]


def emit(kind: str, study: dict, plan: Plan, study_file: str, out_dir: str) -> list[str]:
    """Write the lists of KIND (slurm or mpirun) for the unfinished runs; returns the files written."""
    os.makedirs(out_dir, exist_ok=True)
    base = [sys.executable, "-m", "fdsl", "study", study_file]
    groups = stages(plan, study["out"])
    written = []

    def line(name: str) -> str:
        return shlex.join([*base, "--run", name])

    if kind == "slurm":
        submit = ["#!/bin/bash", "# Submit the study's stages, each after the previous one ended well.",
                  "set -euo pipefail", 'cd "$(dirname "$0")"', "after="]
        for k, names in enumerate(groups, 1):
            path = os.path.join(out_dir, f"stage{k}.txt")
            write_atomic(path, "".join(line(n) + "\n" for n in names))
            written.append(path)
            submit.append(f"job=$(sbatch --parsable $after --array=0-{len(names) - 1} study.slurm stage{k}.txt)")
            submit.append('after="--dependency=afterok:$job"')
        submit.append('echo "submitted; the last stage is job $job"')
        for name, text in (("study.slurm", SLURM.format(name=study["name"], out=study["out"])),
                           ("submit.sh", "\n".join(submit) + "\n")):
            write_atomic(os.path.join(out_dir, name), text)
            os.chmod(os.path.join(out_dir, name), 0o755)
            written.append(os.path.join(out_dir, name))
    else:
        lines = []
        for k, names in enumerate(groups, 1):
            lines.append(f"# stage {k}: {len(names)} independent runs")
            lines += ["mpirun -np 1 " + line(n) for n in names]
        path = os.path.join(out_dir, "mpirun.txt")
        write_atomic(path, "\n".join(lines) + "\n")
        written.append(path)
    return written
