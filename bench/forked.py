"""`python ARGV` in a child forked from a server that imported torch and timm once (multiprocessing's
forkserver): a fresh interpreter spends ~7 s on those imports on a 2-core machine, more than a toy-sized run.

The child is still its own process, in its own process group: its environment, working folder, argv, thread
count (from OMP_NUM_THREADS, as a fresh interpreter takes it), fd-level output, atexit handlers and exit code.
Used by the gpucheck dry run (bench/gpucheck/harness.py) and the tests' `run_cli` (tests/helpers/runs.py).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import tempfile

PRELOAD = ["torch", "timm", "fdsl.cli.main", "fdsl.recipes.supervised"]  # one that fails to import is skipped


def run(argv: list[str], env: dict, timeout: float, cwd: str | None = None,
        stderr_apart: bool = False) -> tuple[str, str, int | None]:
    """(stdout, stderr, exit code; None when killed at `timeout`) of `python ARGV[1:]`, where ARGV[1:] is
    `-m MODULE ...` or `SCRIPT ...`. Without `stderr_apart` stderr goes into stdout (2>&1) and comes back ''."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # no effect once this process's server is running
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "stdout")
        err = os.path.join(folder, "stderr") if stderr_apart else out
        child = context.Process(target=_child, args=(argv[1:], env, cwd, out, err))
        child.start()
        child.join(timeout)
        code = child.exitcode
        if code is None:
            os.killpg(child.pid, signal.SIGKILL)  # its workers too
            child.join()
        return _read(out), _read(err) if stderr_apart else "", code


def _child(args: list[str], env: dict, cwd: str | None, out: str, err: str) -> None:
    import atexit
    import runpy

    os.setsid()
    if cwd:
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(handle, fd)
        os.close(handle)
    if env.get("OMP_NUM_THREADS", "").isdigit():
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(args)
            sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))  # as `python SCRIPT` puts it first
            runpy.run_path(args[0], run_name="__main__")
    finally:
        atexit._run_exitfuncs()


def _read(path: str) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()
