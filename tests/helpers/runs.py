"""Tiny image folders, the `fdsl` CLI in a child process, a run's summary.csv and a free TCP port."""
from __future__ import annotations

import atexit
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from tests.helpers import REPO

# A ViT small enough for CPU tests: 16 px input, 8 px patches (4 tokens), one block.
TINY_VIT = ["--model", "deit_tiny_patch16_224", "--model-kwargs", "patch_size=8", "embed_dim=32", "depth=1",
            "num_heads=2", "--input-size", "3", "16", "16"]


def make_folder(root, classes=4, per_class=12, size=16, splits=("",), seed=0, gray=False):
    """Class c is a solid colour (channel c % 3, brightness by c) plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for c in range(classes):
            d = os.path.join(root, split, f"{c:05d}")
            os.makedirs(d, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                img[..., c % 3] += np.uint8(120 + 40 * (c // 3))
                Image.fromarray(img[..., 0] if gray else img).save(os.path.join(d, f"{c:05d}_{i:04d}.png"))
    return str(root)


def run_cli(*argv, env=None, check=True, timeout=240):
    """`python -m fdsl ARGV` in a child process: its own exit code, stdout and stderr (fd-level) and global
    state, as subprocess.run gives. The child is forked from a server that imported fdsl's training stack once
    (multiprocessing's forkserver), which saves each call the ~7 s a fresh interpreter spends importing torch
    and timm on a 2-core machine."""
    env = {**os.environ, "PYTHONPATH": REPO, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env or {})}
    argv = [str(a) for a in argv]
    with tempfile.TemporaryDirectory() as folder:
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        child = _server().Process(target=_fdsl_child, args=(argv, env, out, err))
        child.start()
        child.join(timeout)
        timed_out = child.exitcode is None
        if timed_out:
            child.kill()
            child.join()
        stdout, stderr = _read(out), _read(err)
    command = [sys.executable, "-m", "fdsl", *argv]
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    proc = subprocess.CompletedProcess(command, child.exitcode, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:{proc.stdout[-3000:]}\nSTDERR:{proc.stderr[-3000:]}")
    return proc


PRELOAD = ["fdsl.cli.main", "fdsl.cli.pretrain", "fdsl.cli.finetune", "fdsl.recipes.supervised"]


def _server():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # no effect once this process's server is running
    return context


def _fdsl_child(argv, env, out, err):
    """The body of `python -m fdsl ARGV` in a forked child: the environment, fds 1 and 2 to files, the
    thread count a fresh interpreter would take from OMP_NUM_THREADS, and atexit handlers run at the end."""
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(handle, fd)
        os.close(handle)
    import torch

    if env.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = [sys.executable, "-m", "fdsl", *argv]
    from fdsl.cli.main import main

    try:
        code = main(argv)
    finally:
        atexit._run_exitfuncs()
    sys.exit(code)


def _read(path: str) -> str:
    with open(path, errors="replace") as handle:
        return handle.read()


def read_summary(run_dir):
    import csv

    with open(os.path.join(run_dir, "summary.csv")) as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    """A TCP port the OS has just handed out (a rendezvous port no parallel test shares)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
