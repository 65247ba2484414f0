"""Running a study's runs on this machine: JOBS at a time (one thread each), each once its dependencies are done,
the longest chain first; a run is done when its result file STUDY_OUT/results/<run>.json exists, which is
written (atomically) only after its command succeeded. Anything else left by an interrupted run is removed
before it starts again, except a database build's images: `fdsl render` resumes them itself."""
from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait

from fdsl.errors import UserError
from fdsl.study import worker
from fdsl.study.graph import Plan, Run, fill

DEFAULT_SECONDS = {"data": 10.0, "build": 20.0, "pretrain": 80.0, "finetune": 30.0}  # until a run of the kind ends


def result_path(root: str, run: Run) -> str:
    return os.path.join(root, "results", run.name + ".json")


def log_path(root: str, run: Run) -> str:
    return os.path.join(root, "logs", run.name + ".log")


def read_result(root: str, run: Run) -> dict | None:
    try:
        with open(result_path(root, run)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def reused_result(study: dict, run: Run) -> tuple[str, dict] | None:
    """(folder, result) of RUN done in one of the study's `reuse` folders (same name, so same key), or None."""
    for folder in study.get("reuse", []):
        result = read_result(folder, run)
        if result and result.get("key") == run.key and os.path.exists(os.path.join(folder, "runs", run.name)):
            return folder, result
    return None


def adopt_reused(study: dict, plan: Plan) -> list[str]:
    """Take the runs not done here but done in a `reuse` folder: link their output folder into STUDY_OUT/runs,
    copy the log, write the result with `reused_from`. Returns their names."""
    root, taken = study["out"], []
    for run in plan.order():
        found = None if read_result(root, run) else reused_result(study, run)
        if not found:
            continue
        folder, result = found
        target = os.path.join(root, "runs", run.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.lexists(target):  # what an interrupted attempt here left
            shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
        os.symlink(os.path.join(folder, "runs", run.name), target)
        if os.path.exists(log_path(folder, run)):
            os.makedirs(os.path.dirname(log_path(root, run)), exist_ok=True)
            shutil.copyfile(log_path(folder, run), log_path(root, run))
        write_atomic(result_path(root, run), json.dumps({**result, "reused_from": folder}, indent=1) + "\n")
        taken.append(run.name)
    return taken


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def final_metric(run_dir: str, metric: str) -> float | None:
    """METRIC in the last row of a training run's summary.csv (the final epoch, not the best), or None."""
    try:
        with open(os.path.join(run_dir, "summary.csv")) as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return None
    return float(rows[-1][metric]) if rows and rows[-1].get(metric) else None


def finish(study: dict, run: Run, argv: list[str], seconds: float) -> str | None:
    """Write RUN's result file; returns why it cannot (a fine-tune without a final top-1), else None."""
    result = {"name": run.name, "key": run.key, "kind": run.kind, "argv": argv, "seconds": round(seconds, 1),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **run.meta}
    if run.kind == "finetune":
        value = final_metric(os.path.join(study["out"], "runs", run.name), study["metric"])
        if value is None:
            return f"no {study['metric']} in the last row of its summary.csv"
        result["top1"] = value
    write_atomic(result_path(study["out"], run), json.dumps(result, indent=1) + "\n")
    return None


def prepare(study: dict, run: Run) -> list[str]:
    """Clear what an interrupted attempt left; returns the command line."""
    out = os.path.join(study["out"], "runs", run.name)
    if run.kind != "build" and os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(study["out"], "logs"), exist_ok=True)
    return fill(run, study["out"], sys.executable)


def run_one(study: dict, plan: Plan, name: str) -> int:
    """`fdsl study STUDY --run NAME` (what the SLURM and mpirun lists call): one run, in this process."""
    if name not in plan.runs:
        raise UserError(f"--run {name}: not a run of this study; `fdsl study STUDY --dry-run` lists them")
    run = plan.runs[name]
    if read_result(study["out"], run):
        print(f"{name}: done already")
        return 0
    missing = [d for d in run.deps if not read_result(study["out"], plan.runs[d])]
    if missing:
        raise UserError(f"--run {name}: run {', '.join(missing)} first (it reads their output)")
    argv = prepare(study, run)
    code, seconds = worker.run_command(argv, log_path(study["out"], run))
    problem = f"exit {code}" if code else finish(study, run, argv, seconds)
    if problem:
        print(f"{name} failed ({problem}); log: {log_path(study['out'], run)}", file=sys.stderr)
        return 1
    print(f"{name}: done in {seconds:.0f} s")
    return 0


class Progress:
    """Durations of finished runs per kind -> estimates, the longest-chain-first priority and the ETA."""

    def __init__(self, study: dict, plan: Plan):
        self.plan = plan
        self.seconds: dict[str, list[float]] = {}
        for run in plan.order():
            result = read_result(study["out"], run)
            if result:
                self.seconds.setdefault(run.kind, []).append(result["seconds"])

    def estimate(self, run: Run) -> float:
        """The mean duration of the finished runs of its kind; of a kind not seen yet, the default scaled by how
        the finished runs compared with their defaults."""
        got = self.seconds.get(run.kind)
        if got:
            return sum(got) / len(got)
        seen = [(sum(v) / len(v), DEFAULT_SECONDS[k]) for k, v in self.seconds.items()]
        scale = sum(m for m, _ in seen) / sum(d for _, d in seen) if seen else 1.0
        return DEFAULT_SECONDS[run.kind] * scale

    def chain(self, run: Run, pending: dict[str, Run]) -> float:
        """RUN's estimate plus its longest chain of pending dependents."""
        after = [r for r in pending.values() if run.name in r.deps]
        return self.estimate(run) + max((self.chain(r, pending) for r in after), default=0.0)

    def eta(self, pending: dict[str, Run], running: dict, jobs: int) -> str:
        if not self.seconds:
            return "ETA after the first run"
        now = time.perf_counter()
        left = sum(self.estimate(r) for r in pending.values())
        left += sum(max(0.0, self.estimate(r) - (now - started)) for r, started in running.values())
        return f"ETA {left / max(1, jobs) / 60:.1f} min"


def run_all(study: dict, plan: Plan, jobs: int) -> int:
    root = study["out"]
    pending = {r.name: r for r in plan.order() if not read_result(root, r)}
    total = len(plan.runs)
    if not pending:
        print(f"nothing to run: all {total} runs are done ({root})")
        return 0
    progress = Progress(study, plan)
    threads = worker.threads_per_run(jobs)
    print(f"{len(pending)} of {total} runs to do, {jobs} at a time ({threads} thread{'s' * (threads > 1)} each); "
          f"logs: {root}/logs", flush=True)
    failed: list[tuple[Run, str]] = []
    running: dict = {}  # future -> (run, start time)
    with worker.pool(jobs, threads) as executor:
        while pending or running:
            ready = [r for r in pending.values() if not any(d in pending or d in _names(running) for d in r.deps)
                     and not any(d in {f.name for f, _ in failed} for d in r.deps)]
            ready.sort(key=lambda r: -progress.chain(r, pending))
            for run in ready[:max(0, jobs - len(running))]:
                argv = prepare(study, run)
                future = executor.submit(worker.run_command, argv, log_path(root, run))
                running[future] = (run, time.perf_counter(), argv)
                del pending[run.name]
            if not running:
                break  # what is left waits for a failed run
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                run, _, argv = running.pop(future)
                code, seconds = future.result()
                problem = f"exit {code}" if code else finish(study, run, argv, seconds)
                if problem:
                    failed.append((run, problem))
                else:
                    progress.seconds.setdefault(run.kind, []).append(seconds)
                done = total - len(pending) - len(running) - len(failed)
                state = f"failed ({problem})" if problem else f"done in {seconds:.0f} s"
                top1 = read_result(root, run) if not problem and run.kind == "finetune" else None
                shown = f", top-1 {top1['top1']:.1f}" if top1 else ""
                eta = progress.eta(pending, {f: v[:2] for f, v in running.items()}, jobs)
                print(f"[{done}/{total} done, {len(running)} running, {eta}] {run.name}: {state}{shown}", flush=True)
    return _report_failures(root, failed, pending)


def _names(running: dict) -> set[str]:
    return {run.name for run, *_ in running.values()}


def _report_failures(root: str, failed: list, pending: dict) -> int:
    if not failed:
        return 0
    for run, problem in failed:
        print(f"error: {run.name} failed ({problem}); log: {log_path(root, run)}", file=sys.stderr)
    with open(log_path(root, failed[0][0])) as f:
        sys.stderr.write("".join(f.readlines()[-20:]))
    if pending:
        print(f"{len(pending)} runs that need them were not started; re-run the same command after a fix "
              "(finished runs are kept)", file=sys.stderr)
    return 1
