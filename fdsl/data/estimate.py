"""`fdsl render <db> ... --estimate`: time a small sample of the build on this machine and project the rest.

A few dozen classes spread over the requested range are rendered, PNG-encoded and written to a scratch
folder of the system's temporary directory (removed at once; nothing goes to the output folder), with their
class set-up (parameter search) timed apart, so the projection covers both costs. Times are this process's CPU time, so other work on the machine does not inflate them. Wall time
assumes every worker of every rank runs as fast as this one core, which is what the build achieves when
workers x ranks does not exceed the free cores and the disk keeps up (file-system time is not counted).
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass

from fdsl.data import writers
from fdsl.data.builder import BuildPlan, parse_class_range

TAR_BLOCK = 512
FS_BLOCK = 4096


@dataclass
class Estimate:
    classes: int  # classes in the requested range
    instances: int
    sampled_classes: int
    sampled_images: int
    image_s: float  # seconds per image on one core: render + PNG encode
    class_s: float  # seconds per class for its parameters (e.g. FractalDB's category search)
    png_bytes: float  # mean PNG size
    param_bytes: float  # parameter files per class
    workers: int
    ranks: int

    @property
    def images(self) -> int:
        return self.classes * self.instances

    @property
    def core_seconds(self) -> float:
        return self.classes * (self.class_s + self.instances * self.image_s)

    @property
    def wall_seconds(self) -> float:
        return self.core_seconds / (self.workers * self.ranks)

    @property
    def per_core_rate(self) -> float:
        return self.images / self.core_seconds

    def png_disk(self) -> tuple[float, float]:
        """(bytes of data, bytes on a file system of 4 KiB blocks) of the PNG folders."""
        data = self.images * self.png_bytes + self.classes * self.param_bytes
        blocks = self.images * _round_up(self.png_bytes, FS_BLOCK) + self.classes * _round_up(self.param_bytes,
                                                                                             FS_BLOCK)
        return data, blocks

    def shard_disk(self) -> float:
        """Bytes of webdataset shards: per sample a tar header and the padded PNG, a header and the label."""
        per_sample = TAR_BLOCK + _round_up(self.png_bytes, TAR_BLOCK) + 2 * TAR_BLOCK
        return self.images * per_sample + self.classes * self.param_bytes


def _round_up(value: float, block: int) -> float:
    return math.ceil(value / block) * block if value else 0.0


def sample_classes(start: int, stop: int, count: int) -> list[int]:
    """``count`` classes spread evenly over [start, stop)."""
    count = min(count, stop - start)
    return sorted({start + (stop - start) * k // count for k in range(count)})


def measure(plan: BuildPlan, class_range: str | None, workers: int, ranks: int, seconds: float = 4.0,
            classes: int = 24) -> Estimate:
    """Render and encode instances 0, 1, 2 ... of a few classes for about ``seconds`` of CPU time in all."""
    db = plan.db
    start, stop = parse_class_range(class_range, db.num_classes)
    chosen = sample_classes(start, stop, classes)
    next(db.render(chosen[0], db.class_params(chosen[0]), [0]))  # compile the renderer (numba) first
    class_time = image_time = png_total = param_total = 0.0
    images = 0
    budget = seconds / len(chosen)
    with tempfile.TemporaryDirectory(prefix="fdsl-estimate-") as scratch:
        for cls in chosen:
            began = time.process_time()
            params = db.class_params(cls)
            param_total += sum(len(data) for data in db.param_files(cls, params).values())
            class_time += time.process_time() - began
            began = time.process_time()
            for image in db.render(cls, params, range(db.num_instances)):
                data = writers.encode_png(image, plan.mode)
                writers.atomic_write(os.path.join(scratch, f"{images}.png"), data)
                png_total += len(data)
                images += 1
                if time.process_time() - began > budget:
                    break
            image_time += time.process_time() - began
    return Estimate(classes=stop - start, instances=db.num_instances, sampled_classes=len(chosen),
                    sampled_images=images, image_s=image_time / images, class_s=class_time / len(chosen),
                    png_bytes=png_total / images, param_bytes=param_total / len(chosen), workers=workers,
                    ranks=ranks)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def report(name: str, size: int, est: Estimate, shard_size: int) -> str:
    png_data, png_blocks = est.png_disk()
    shards = math.ceil(est.images / shard_size)
    set_up = f", class set-up {est.class_s * 1000:.1f} ms" if est.class_s >= 0.0005 else ""
    return "\n".join([
        f"{name} estimate (nothing written to the output): {est.classes:,} classes x {est.instances:,} images, {size} px",
        (f"  measured on {est.sampled_classes} classes, {est.sampled_images:,} images: "
        f"{est.per_core_rate:,.0f} images/s per core ({est.image_s * 1000:.2f} ms per image rendered, encoded "
        f"and written{set_up})"),
        (f"  build time: {human_seconds(est.wall_seconds)} with {est.workers} worker(s) x {est.ranks} rank(s) "
        f"({human_seconds(est.core_seconds)} on one core; assumes a free core per worker)"),
        (f"  disk: PNG folders {human_bytes(png_data)} ({human_bytes(png_blocks)} on 4 KiB file-system blocks); "
        f"shards (--format wds) {human_bytes(est.shard_disk())} in {shards:,} files"),
    ])
