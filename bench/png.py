"""PNG encode and decode cost per database: fdsl's writer (filters none/sub/up, ISA-L or zlib) against OpenCV at
the settings fdsl used before (compression 1, FILTERED strategy), and the training loader's decode of both.

    python bench/png.py [--images 40] [--clock cpu]

One core. "decode" is the image-folder loader's path (PIL open + convert to RGB), so a slower read of the new
files would show here.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np
from PIL import Image

from fdsl.data import png, registry

cv2.setNumThreads(1)
OPENCV_BEFORE = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_FILTERED]
DATABASES = {"rcdb": {}, "visualatom": {}, "fractaldb": {"size": 362, "search_points": 20000, "search_size": 128},
             "onepfrac": {}, "exfractaldb": {}}


def sample(name: str, count: int) -> list[np.ndarray]:
    classes = min(count, 3) if name == "exfractaldb" else count
    db = registry.create(name, classes=classes, **DATABASES[name])
    per_class = count // classes
    out = []
    for cls in range(classes):
        out += list(db.render(cls, db.class_params(cls), range(per_class)))
    return out


def opencv(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image, OPENCV_BEFORE)[1].tobytes()


def per_image_ms(fn, items, clock) -> float:
    fn(items[0])
    best = float("inf")
    for _ in range(3):
        started = clock()
        for item in items:
            fn(item)
        best = min(best, clock() - started)
    return best / len(items) * 1000


def decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="images per database (default 40)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"PNG backend: {png.describe()}; {args.clock} clock, one core")
    print(f"{'database':<12} {'encoder':<22} {'encode ms':>9} {'KB':>7} {'x faster':>8} {'decode ms':>9}")
    for name in DATABASES:
        images = sample(name, args.images)
        before = [opencv(i) for i in images]
        base_ms = per_image_ms(opencv, images, clock)
        rows = [("OpenCV (before)", opencv, before)]
        for backend in ("isal", "zlib"):
            for filter in png.FILTERS:
                def encode(i, f=filter, b=backend):
                    return png.encode(i, f, b)
                rows.append((f"fdsl {backend} {filter}", encode, [encode(i) for i in images]))
        for label, fn, files in rows:
            ms = per_image_ms(fn, images, clock)
            kb = np.mean([len(f) for f in files]) / 1000
            print(f"{name:<12} {label:<22} {ms:9.3f} {kb:7.1f} {base_ms / ms:7.1f}x "
                  f"{per_image_ms(decode, files, clock):9.3f}")


if __name__ == "__main__":
    main()
