"""Rendering speed per core, against the published renderers' figures (specs/generators.md).

    python bench/render.py [--seconds 3]

Pinned to one core. Each row: images/s, the issue's target, and the ratio to the published
renderer measured on the same machine kind. Contour and 3D databases are added by
bench/bench_contour3d.py when present.
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

from fdsl.data import builder, registry, writers
from fdsl.render import ifs2d

cv2.setNumThreads(1)


def timed(fn, seconds: float) -> float:
    """Calls of fn per second, after one warm-up call (numba compilation)."""
    fn()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        count += fn()
    return count / (time.perf_counter() - started)


def fractaldb_written(seconds: float) -> float:
    """FractalDB-1k instances (362 px, 200k iterations, patch_gray, weights 0.1, 10 draws, 4 flips)."""
    db = registry.create("fractaldb", classes=1000, instance=10, size=362)
    params = db.class_params(0)
    with tempfile.TemporaryDirectory() as out:
        os.makedirs(os.path.join(out, "00000"))
        chunks = iter(range(10**9))

        def one_row() -> int:  # one weight row: 1 chaos game, 10 patch draws, 40 PNGs
            row = next(chunks) % 25
            instances = range(row * 40, row * 40 + 40)
            for inst, image in zip(instances, db.render(0, params, instances)):
                writers.atomic_write(os.path.join(out, db.image_path(0, inst)), writers.encode_png(image))
            return 40

        return timed(one_row, seconds)


def onepfrac_written(seconds: float) -> float:
    """1p-frac classes (512 px, 100k iterations, patch_gray, pixel-threshold redraws included)."""
    db = registry.create("onepfrac", classes=10**6)
    with tempfile.TemporaryDirectory() as out:
        plan = builder.BuildPlan(db, out)
        builder._init_worker(plan)
        classes = iter(range(10**6))
        return timed(lambda: builder.build_class(next(classes)), seconds)


def in_memory_224(seconds: float) -> float:
    """A new system every image (1p-frac perturbation), 100k points, 224 px patch raster, no encoding."""
    base = ifs2d.sigma_factor_system(np.random.default_rng(0), 2, 4.0)
    rng = np.random.default_rng(1)

    def one() -> int:
        xs, ys = ifs2d.render_points(ifs2d.perturb(base, rng, 0.1), 100_000, 224)
        ifs2d.draw(xs, ys, 224, "patch_gray", rng)
        return 1

    return timed(one, seconds)


def category_search_seconds(classes: int = 40) -> float:
    """Seconds to search FractalDB-1k's 1,000 categories on 2 cores, extrapolated from `classes`."""
    db = registry.create("fractaldb", classes=1000)
    db.class_params(999)  # compile
    started = time.perf_counter()
    for cls in range(classes):
        db.class_params(cls)
    return (time.perf_counter() - started) / classes * 1000 / 2


def rows_2d(seconds: float) -> list[dict]:
    return [
        {"name": "FractalDB-1k instance, 362 px, PNG", "images_per_s": fractaldb_written(seconds),
         "target": 100, "published_per_s": 1 / 3.8},
        {"name": "1p-frac, 512 px, PNG", "images_per_s": onepfrac_written(seconds),
         "target": 50, "published_per_s": 1 / 6.5},
        {"name": "2D IFS in memory, 224 px, 100k pts", "images_per_s": in_memory_224(seconds),
         "target": 60, "published_per_s": 47.0},
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per row")
    args = parser.parse_args()
    rows = rows_2d(args.seconds)
    try:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_contour3d

        rows += bench_contour3d.run(args.seconds)
    except ImportError:
        pass
    print(f"{'database':<42} {'images/s':>9} {'target':>7} {'baseline':>9} {'ratio':>8}  ok")
    for row in rows:
        base = row.get("published_per_s")
        ratio = f"{row['images_per_s'] / base:7.1f}x" if base else "      -"
        ok = "yes" if row["images_per_s"] >= row["target"] else "NO"
        print(f"{row['name']:<42} {row['images_per_s']:9.1f} {row['target']:7.0f} "
              f"{(f'{base:.2f}' if base else '-'):>9} {ratio}  {ok}")
    search = category_search_seconds()
    print(f"FractalDB-1k category search, 2 cores: {search:.0f} s ({search / 60:.1f} min; target: minutes)")


if __name__ == "__main__":
    main()
