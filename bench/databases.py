"""Size on disk and build time per core of every database, from a sample built with its published settings.

    python bench/databases.py [--classes 8] [--previews docs/previews]

Each row runs the database's own build script (renderers/<db>.sh, published parameters) with one worker for a
few classes, category search included, and scales the bytes written and the CPU seconds used (not wall time, so
the figure holds on a busy machine) to the full database (classes x images). With --previews, also writes a contact sheet of the sample to DIR/<database>.png.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name in the README, renderer script (or fdsl database with options), full classes x images, sample images/class
DATABASES = [
    ("FractalDB-1k", ["renderers/fractaldb.sh"], 1000, 1000, 40),
    ("1p-frac", ["renderers/onepfrac.sh"], 1000, 1, 1),
    ("2D-OFDB-1k", ["renderers/ofdb2d.sh"], 1000, 1, 1),
    ("RCDB-1k", ["renderers/rcdb.sh"], 1000, 1000, 25),
    ("VisualAtom-1k", ["renderers/visualatom.sh"], 1000, 1000, 25),
    ("ExFractalDB-1k", ["renderers/exfractaldb.sh"], 1000, 1000, 25),
    ("MV-FractalDB-1k", ["fdsl", "mvfractaldb", "--classes", "1000"], 1000, 12, 12),
    ("3D-OFDB-1k", ["fdsl", "ofdb3d", "--classes", "1000"], 1000, 1, 1),
]


def build(command: list[str], out: str, classes: int, per_class: int) -> float:
    """CPU seconds to build `classes` classes with one worker (one core's work for that share of the database)."""
    env = {**os.environ, "PYTHONPATH": REPO, "FDSL": f"{sys.executable} -m fdsl", "WORKERS": "1",
           "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if command[0] == "fdsl":
        base = [sys.executable, "-m", "fdsl", "render", *command[1:]]
    else:
        base = ["bash", os.path.join(REPO, command[0])]
    if hasattr(os, "sched_getaffinity"):
        base = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *base]
    base += ["--workers", "1", "--no-progress"]

    def run(target: str, n: int, k: int) -> None:
        cmd = base + ["--out", target, "--classes", str(n), "--instances", str(k)]
        subprocess.run(cmd, env={**env, "OUT": target}, check=True, capture_output=True)

    run(out + "-warmup", 1, 1)  # numba compilation (cached on disk), not counted
    startup = cpu_seconds(lambda: run(out + "-one", 1, 1))  # interpreter, imports, one image
    return cpu_seconds(lambda: run(out, classes, per_class)) - startup


def cpu_seconds(fn) -> float:
    """CPU seconds (user + system) that fn's child processes used: steady on a machine shared with others."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def disk_bytes(root: str) -> tuple[int, int]:
    """(bytes, images) of the PNGs under root."""
    total = count = 0
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".png"):
                total += os.path.getsize(os.path.join(directory, name))
                count += 1
    return total, count


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=8, help="classes in each sample (more: steadier figures)")
    parser.add_argument("--previews", default=None, help="also write DIR/<database>.png contact sheets")
    parser.add_argument("--only", nargs="*", default=None, help="database names to run")
    args = parser.parse_args()
    print(f"{'database':<16} {'sample':>10} {'s/class':>8} {'KB/image':>9} {'full size':>10} {'full build, 1 core':>19}")
    for name, command, classes, per_class, sample_per_class in DATABASES:
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "db")
            n_classes = args.classes * (8 if per_class == 1 else 1)  # one-image databases: sample more classes
            seconds = build(command, out, n_classes, sample_per_class)
            size, images = disk_bytes(out)
            per_image = size / images
            full_images = classes * per_class
            per_class_s = seconds / n_classes * per_class / sample_per_class
            full_s = per_class_s * classes
            print(f"{name:<16} {images:>10} {per_class_s:8.2f} {per_image / 1000:9.1f} "
                  f"{human(per_image * full_images):>10} {duration(full_s):>19}", flush=True)
            if args.previews:
                os.makedirs(args.previews, exist_ok=True)
                grid = ["--classes", "9", "--per-class", "1"] if per_class == 1 else ["--classes", "4", "--per-class", "4"]
                subprocess.run([sys.executable, "-m", "fdsl", "preview", out, "--out",
                                os.path.join(args.previews, f"{name.split('-1k')[0].lower()}.png"), *grid, "--tile", "80"],
                               env={**os.environ, "PYTHONPATH": REPO}, check=True, capture_output=True)


if __name__ == "__main__":
    main()
