"""Rendering speed per core of the contour (RCDB, VisualAtom) and 3D IFS (ExFractalDB) databases.

    python bench/bench_contour3d.py [--seconds 3]

Pinned to one core. Contour rows render a fixed sample of (class, instance) pairs drawn with the
published ranges, so the class-to-class spread of cost is averaged the same way every run.
"PNG" rows encode as the builder does (gray single-channel, OpenCV compression 1, FILTERED) and
write the file; "in memory" rows stop at the uint8 array.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np

from fdsl.data import registry, writers
from fdsl.render import ifs3d

cv2.setNumThreads(1)

SAMPLE = 200  # (class, instance) pairs per contour pass: one image of each of 200 classes


def per_second(one_pass, seconds: float) -> float:
    """Images per second over whole passes of ``one_pass`` (returns its image count), after a warm-up."""
    one_pass(warm_up=True)
    images, started = 0, time.perf_counter()
    while True:
        images += one_pass(warm_up=False)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return images / elapsed


def contour_pass(name: str, out: str | None):
    db = registry.create(name, classes=SAMPLE)
    params = [db.class_params(cls) for cls in range(SAMPLE)]

    def one_pass(warm_up: bool) -> int:
        classes = range(1) if warm_up else range(SAMPLE)
        for cls in classes:
            image = next(db.render(cls, params[cls], [cls % 1000]))
            if out is not None:
                path = os.path.join(out, f"{cls:05d}.png")
                writers.atomic_write(path, writers.encode_png(image))
        return len(classes)

    return one_pass


def exfractaldb_pass(out: str | None):
    db = registry.create("exfractaldb", classes=1)
    params = db.class_params(0)

    def one_pass(warm_up: bool) -> int:
        instances = range(7) if warm_up else range(1000)  # 143 clouds, 7 random views each
        for inst, image in zip(instances, db.render(0, params, instances)):
            if out is not None:
                writers.atomic_write(os.path.join(out, f"{inst:04d}.png"), writers.encode_png(image))
        return len(instances)

    return one_pass


def cloud_pass():
    system = ifs3d.search_system(np.random.default_rng(0))
    rng = np.random.default_rng(1)

    def one_pass(warm_up: bool) -> int:
        count = 1 if warm_up else ifs3d.INSTANCES_PER_CLASS
        for index in range(count):
            ifs3d.instance_cloud(system, index, rng)
        return count

    return one_pass


def run(seconds: float = 3.0) -> list[dict]:
    """One row per measurement: name, images_per_s, target, published_per_s (or None)."""
    with tempfile.TemporaryDirectory() as out:
        return [
            {"name": "RCDB 512 px, PNG", "images_per_s": per_second(contour_pass("rcdb", out), seconds),
             "target": 110, "published_per_s": 1 / 0.088},
            {"name": "RCDB 512 px, in memory", "images_per_s": per_second(contour_pass("rcdb", None), seconds),
             "target": 300, "published_per_s": None},
            {"name": "VisualAtom 512 px, PNG",
             "images_per_s": per_second(contour_pass("visualatom", out), seconds),
             "target": 72, "published_per_s": 1 / 0.41},
            {"name": "VisualAtom 512 px, in memory",
             "images_per_s": per_second(contour_pass("visualatom", None), seconds),
             "target": 150, "published_per_s": None},
            {"name": "ExFractalDB view 224 px, PNG", "images_per_s": per_second(exfractaldb_pass(out), seconds),
             "target": 300, "published_per_s": None},
            {"name": "ExFractalDB view 224 px, in memory",
             "images_per_s": per_second(exfractaldb_pass(None), seconds), "target": 1000, "published_per_s": None},
            {"name": "3D IFS instance, 10k points (cloud/s)", "images_per_s": per_second(cloud_pass(), seconds),
             "target": 500, "published_per_s": None},
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per row (default 3)")
    args = parser.parse_args()
    print(f"{'database':<40} {'images/s':>9} {'ms/img':>7} {'target':>7} {'published':>9} {'ratio':>7}  ok")
    for row in run(args.seconds):
        rate, base = row["images_per_s"], row["published_per_s"]
        ratio = f"{rate / base:6.1f}x" if base else "      -"
        ok = "yes" if rate >= row["target"] else "NO"
        print(f"{row['name']:<40} {rate:9.1f} {1000 / rate:7.2f} {row['target']:7.0f} "
              f"{(f'{base:.2f}' if base else '-'):>9} {ratio}  {ok}")


if __name__ == "__main__":
    main()
