"""Running commands in a pool of worker processes, each importing torch, timm and torchvision once.

A fresh `python -m fdsl` per run costs about 6 CPU seconds of imports, more than many small runs themselves, so
an `fdsl ...` command runs in-process in a spawned worker (the same argv through fdsl.cli.main, so the same
run); any other command (a script that prepares a data set) runs as a child process of the worker. Output goes
to the run's log file.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def init(threads: int, repo: str, runner: int) -> None:
    """Worker start-up: THREADS torch threads, this checkout's fdsl first on the path, and a watch on the runner."""
    threading.Thread(target=_exit_without, args=(runner,), daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.path.insert(0, repo)
    import torch

    torch.set_num_threads(threads)
    import fdsl.cli.main  # noqa: F401  (the commands import the rest on first use)


def pool(jobs: int, threads: int) -> ProcessPoolExecutor:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return ProcessPoolExecutor(max(1, jobs), mp_context=get_context("spawn"), initializer=init,
                               initargs=(threads, repo, os.getpid()))


def _exit_without(runner: int) -> None:
    """A worker whose runner died (kill -9 of the runner alone, not its process group) stops within a second:
    the re-run starts the unfinished runs afresh, and an orphan must not go on writing into their folders."""
    while os.getppid() == runner:
        time.sleep(1.0)
    os._exit(1)


def threads_per_run(jobs: int) -> int:
    """OMP_NUM_THREADS if set, else one thread per run when several run at once, else every core."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return 1 if jobs > 1 else len(os.sched_getaffinity(0))


def run_command(argv: list[str], log: str) -> tuple[int, float]:
    """ARGV in this worker, its stdout and stderr (file descriptors 1 and 2) appended to LOG; returns (exit code,
    wall seconds). ['python', '-m', 'fdsl', ...] runs in-process, anything else as a child process."""
    start = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            code = _in_process(argv[3:]) if argv[1:3] == ["-m", "fdsl"] else subprocess.call(argv)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return int(code or 0), time.perf_counter() - start


def _in_process(argv: list[str]) -> int:
    import traceback

    from fdsl.cli.main import main

    try:
        return main(list(argv))
    except SystemExit as err:  # argparse
        return err.code if isinstance(err.code, int) else 1
    except BaseException:  # noqa: BLE001  (reported in the log, the run counts as failed)
        traceback.print_exc()
        return 1
