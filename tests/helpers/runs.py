"""Tiny image folders, the `fdsl` CLI in a child process, a run's summary.csv and a free TCP port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
from PIL import Image

from bench import forked
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
    (bench/forked.py), which saves each call the ~7 s a fresh interpreter spends importing torch and timm."""
    env = {**os.environ, "PYTHONPATH": REPO, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "fdsl", *map(str, argv)]
    stdout, stderr, code = forked.run(command, env, timeout, stderr_apart=True)
    if code is None:
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    proc = subprocess.CompletedProcess(command, code, stdout, stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:{proc.stdout[-3000:]}\nSTDERR:{proc.stderr[-3000:]}")
    return proc


def read_summary(run_dir):
    import csv

    with open(os.path.join(run_dir, "summary.csv")) as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    """A TCP port the OS has just handed out (a rendezvous port no parallel test shares)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
