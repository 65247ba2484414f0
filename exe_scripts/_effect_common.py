"""What the self-supervised effect checks (hpt_effect.py, ssl_effect.py) share: fdsl commands run in a pool of
worker processes; the per-seed table (mean +- std, gain over a counterpart paired by seed) is fdsl study's
(fdsl/study/aggregate.py).

The commands run in-process in JOBS spawned workers (OMP_NUM_THREADS, else cores / JOBS torch threads each),
each importing torch, timm and torchvision once: a fresh `python -m fdsl` per run costs about 6 CPU seconds of
imports, more than many of these runs themselves. Each command's output goes to WORK/logs/<name>.log.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait

from fdsl.study import worker


def _run_fdsl(argv: list[str], log: str) -> tuple[int, float]:
    """`fdsl ARGV` in this worker (fdsl.study.worker.run_command), output appended to LOG; returns (exit code,
    CPU seconds of this process during the command)."""
    cpu = time.process_time()
    code, _ = worker.run_command([sys.executable, "-m", "fdsl", *argv], log)
    return code, time.process_time() - cpu


class Pool:
    """JOBS worker processes for fdsl commands: `run(what, tasks)` runs a batch and prints one line with its wall
    and CPU time; a failed command stops the script with the tail of its log."""

    def __init__(self, work: str, jobs: int):
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // max(1, jobs)))
        self.executor = worker.pool(jobs, int(threads))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.executor.shutdown(cancel_futures=True)

    def run(self, what: str, tasks: list[tuple[str, list, object]]) -> None:
        """tasks: (log name, fdsl argv, after) with after(ok) called in this process once the command ended (or
        None). Nothing to do: prints nothing."""
        if not tasks:
            return
        print(f"== {what}", end="", flush=True)
        start, cpu = time.perf_counter(), 0.0
        pending = {self.executor.submit(_run_fdsl, [str(a) for a in argv], os.path.join(self.logs, log + ".log")):
                   (log, after) for log, argv, after in tasks}
        failed = []
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                log, after = pending.pop(future)
                code, used = future.result()
                cpu += used
                if after is not None:
                    after(code == 0)
                if code:
                    failed.append((code, log))
        print(f" ({time.perf_counter() - start:.0f} s, CPU {cpu:.0f} s)", flush=True)
        for code, log in failed:
            path = os.path.join(self.logs, log + ".log")
            with open(path) as f:
                sys.stderr.write("".join(f.readlines()[-30:]))
            raise SystemExit(f"error: {what}: {log} failed (exit {code}); log: {path}")


def check_sizes(work: str, sizes: dict) -> None:
    """WORK holds runs of one size: a re-run with other knobs would mix them with the finished ones it skips."""
    path = os.path.join(work, "sizes.json")
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
        if old != sizes:
            diff = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in sizes.items() if old.get(k) != v)
            raise SystemExit(f"error: {work} holds runs of other sizes ({diff}); give another WORK")
    os.makedirs(work, exist_ok=True)
    with open(path, "w") as f:
        json.dump(sizes, f)
