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
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context


def _worker_init(threads: int, repo: str) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, repo)
    import torch

    torch.set_num_threads(threads)
    import fdsl.cli.main  # noqa: F401  (the commands import the rest on first use)


def _run_fdsl(argv: list[str], log: str) -> tuple[int, float]:
    """`fdsl ARGV` in this worker, its stdout and stderr (file descriptors 1 and 2) appended to LOG; returns
    (exit code, CPU seconds of this process during the command)."""
    import traceback

    from fdsl.cli.main import main

    cpu = time.process_time()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        f.write("$ fdsl " + " ".join(argv) + "\n")
        f.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            code = main(list(argv))
        except SystemExit as err:  # argparse
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:  # noqa: BLE001  (reported in the log, the run counts as failed)
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return int(code or 0), time.process_time() - cpu


class Pool:
    """JOBS worker processes for fdsl commands: `run(what, tasks)` runs a batch and prints one line with its wall
    and CPU time; a failed command stops the script with the tail of its log."""

    def __init__(self, work: str, jobs: int):
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, len(os.sched_getaffinity(0)) // max(1, jobs)))
        self.executor = ProcessPoolExecutor(max(1, jobs), mp_context=get_context("spawn"), initializer=_worker_init,
                                            initargs=(int(threads), repo))

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
