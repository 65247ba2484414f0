"""Batched torch renderers (fdsl.render.gpu_*) against the numba/OpenCV renderers, images/s per database.

    python bench/gpu_render.py --device cuda --size 256 512                    # one GPU: the issue's targets
    taskset -c 0 python bench/gpu_render.py --device cpu --batch 16 --size 256   # one core, beside numba
    python bench/gpu_render.py --device cpu --quick                              # dry run: seconds a database

Each row: the batched renderer's images/s on --device (render only; --augment adds the recipe's per-sample
augmentation to 224 px), the numba/OpenCV renderer's images/s on ONE core of this machine (in memory, no PNG
encoding: the same work), their ratio, on CUDA the issue's target for the 2D databases (60,000 images/s at
512 px, 100,000 at 256 px, one H100); then the aten ops of one render at batch 16 and at --batch (about one
kernel launch each on CUDA), the graph breaks torch.compile meets in the renderer's device function (0: it
compiles with fullgraph=True), and the peak memory of one batch (CUDA: the allocator's peak; CPU: the peak bytes
of live tensors).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import torch

from fdsl.data import registry
from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.device.batches import create_batches
from fdsl.render import gpu_contour, gpu_ifs, gpu_probe

DATABASES = ("fractaldb", "onepfrac", "ofdb2d", "rcdb", "visualatom", "exfractaldb")
TARGETS = {512: 60_000, 256: 100_000}  # images/s on one H100, 2D databases (the issue)


def options():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="images per batch (default 256 on CUDA, 16 on CPU)")
    p.add_argument("--size", type=int, nargs="+", default=[512], help="image side(s) in pixels")
    p.add_argument("--databases", nargs="+", default=list(DATABASES), choices=registry.names())
    p.add_argument("--classes", type=int, default=16, help="classes to cycle through (their parameters are searched)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per row and renderer")
    p.add_argument("--augment", action="store_true", help="include RandAugment + random erasing to 224 px")
    p.add_argument("--no-numba", action="store_true", help="skip the numba/OpenCV baseline")
    p.add_argument("--no-probe", action="store_true", help="skip op counts, graph breaks and peak memory")
    p.add_argument("--quick", action="store_true",
                   help="dry run: 4 classes, batch 4, 0.2 s timings, 64 px unless --size, small databases, no numba")
    o = p.parse_args()
    if o.quick:
        o.classes, o.seconds, o.no_numba = 4, 0.2, True
        o.batch = o.batch or 4
        if o.size == [512]:
            o.size = [64]
    return o


QUICK = {"fractaldb": {"iterations": 20_000, "search_points": 8000, "search_size": 96},
         "onepfrac": {"iterations": 20_000}, "ofdb2d": {"iterations": 20_000, "search_points": 8000, "search_size": 96},
         "visualatom": {"vertex_num": 300}, "exfractaldb": {"points": 3000}, "mvfractaldb": {"points": 3000},
         "ofdb3d": {"points": 3000}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_rate(batches, device: torch.device, batch: int, seconds: float, augment) -> tuple[float, float]:
    """(images/s, peak device memory of one batch in GiB; 0 on CPU)."""
    classes = torch.arange(batch) % batches.db.num_classes
    instances = torch.arange(batch)

    def one(seed: int) -> None:
        host = torch.Generator().manual_seed(seed)
        gen = torch.Generator(device).manual_seed(seed)
        with torch.no_grad():
            images = batches.render(classes, instances, host, gen)
            if augment is not None:
                augment(images, host, gen)

    one(0)  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    count, start = 0, time.perf_counter()
    for seed in itertools.count(1):
        one(seed)
        count += batch
        if time.perf_counter() - start > seconds:
            break
    sync(device)
    rate = count / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return rate, peak


def render_once(batches, device: torch.device, batch: int):
    classes = torch.arange(batch) % batches.db.num_classes
    host, gen = torch.Generator().manual_seed(7), torch.Generator(device).manual_seed(7)

    def render():
        with torch.no_grad():
            return batches.render(classes, classes, host, gen)
    return render


DEVICE_FUNCTIONS = ((gpu_ifs.IFS2DRenderer, "draw"), (gpu_ifs.IFS3DRenderer, "draw"),
                    (gpu_contour.ContourRenderer, "draw_chunk"))


def graph_breaks(batches, device: torch.device) -> int:
    """Graph breaks of the renderer's device function (what is compiled), on the arguments of a small render."""
    seen = []
    originals = {kind: getattr(kind, name) for kind, name in DEVICE_FUNCTIONS}
    for kind, name in DEVICE_FUNCTIONS:
        def spy(self, *args, _original=originals[kind]):
            seen.append((_original.__get__(self), args))
            return _original(self, *args)
        setattr(kind, name, spy)
    try:
        render_once(batches, device, 2)()
    finally:
        for kind, name in DEVICE_FUNCTIONS:
            setattr(kind, name, originals[kind])
    function, args = seen[0]
    with torch.no_grad():
        return gpu_probe.graph_breaks(function, *args)


def probe(batches, device: torch.device, batch: int) -> tuple[int, int, int, float]:
    """(ops at batch 16, ops at ``batch``, graph breaks, peak GiB of one batch on CPU; 0 on CUDA)."""
    render_once(batches, device, 16)()  # renderers made, constants on the device
    ops = [gpu_probe.count_ops(render_once(batches, device, b)).total for b in (16, batch)]
    peak = gpu_probe.peak_bytes(render_once(batches, device, batch)) / 2**30 if device.type == "cpu" else 0.0
    return ops[0], ops[1], graph_breaks(batches, device), peak


def numba_rate(db, params: list, seconds: float) -> float:
    """The CPU renderer on one core, image by image (instances advance, so FractalDB redraws its points)."""
    pairs = ((c, i) for i in itertools.count() for c in range(len(params)))
    next(db.render(0, params[0], [0]))  # compile
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        cls, inst = next(pairs)
        next(db.render(cls, params[cls], [inst * 41 % db.num_instances]))
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    o = options()
    device = torch.device(o.device)
    batch = o.batch or (256 if device.type == "cuda" else 16)
    if device.type == "cpu":
        torch.set_num_threads(1)  # one core each, so the ratio compares like with like
    cv2.setNumThreads(1)
    augment = None
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"batch {batch}, torch threads {torch.get_num_threads()}, augment {o.augment}")
    print(f"{'database':<12} {'size':>5} {'batched img/s':>14} {'numba img/s (1 core)':>21} {'ratio':>7} "
          f"{'target':>8} {'ops@16':>7} {f'ops@{batch}':>8} {'breaks':>6} {'peak GiB':>9}")
    for size, name in itertools.product(o.size, o.databases):
        db = registry.create(name, classes=o.classes, size=size, **(QUICK.get(name, {}) if o.quick else {}))
        batches = create_batches(db, device, progress=False)
        if o.augment:
            augment = BatchAugment(AugmentSpec(size=(224, 224), re_prob=0.25, re_mode="pixel",
                                               randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", 224)))
        rate, peak = batched_rate(batches, device, batch, o.seconds, augment)
        ops16 = ops = breaks = "-"
        if not o.no_probe:
            ops16, ops, breaks, cpu_peak = probe(batches, device, batch)
            peak = peak or cpu_peak
        base = None if o.no_numba else numba_rate(db, batches.params, o.seconds)
        target = TARGETS.get(size) if device.type == "cuda" and name in ("fractaldb", "onepfrac", "ofdb2d", "rcdb",
                                                                           "visualatom") else None
        print(f"{name:<12} {size:>5} {rate:>14,.1f} {(f'{base:,.1f}' if base else '-'):>21} "
              f"{(f'{rate / base:.2f}x' if base else '-'):>7} {(f'{target:,}' if target else '-'):>8} "
              f"{ops16:>7} {ops:>8} {breaks:>6} {(f'{peak:.2f}' if peak else '-'):>9}", flush=True)
        if name in ("rcdb", "visualatom"):
            rcdb = name == "rcdb"
            key = torch.Generator(device).device  # the device render_contours keys its renderer by
            thinned = int(gpu_contour.renderer(key, size, rcdb, 255 if rcdb else 0).thinned)
            if thinned:
                print(f"  {name}: {thinned} chunk(s) had more pixels than slots and were drawn thinned", flush=True)

if __name__ == "__main__":
    main()
