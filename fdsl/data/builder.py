"""The database builder: renders a registered database into PNG folders or webdataset shards.

Work is split into units that own disjoint output files: a class (PNG folders) or a shard
(webdataset, samples in class-major order). Every image is a pure function of (seed, class,
instance), so 1 worker, 8 workers or 64 ranks with ``class_range`` write the same bytes.
A unit whose files all exist is skipped, so a re-run resumes; files are written under a
temporary name and renamed, so a killed run never leaves half a file.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import dataclass

from tqdm import tqdm

from fdsl import __version__
from fdsl.data import writers
from fdsl.data.registry import Database
from fdsl.errors import UserError

MANIFEST = "manifest.json"
SHARD_PATTERN = "SHARDS-{:06d}.tar"


@dataclass
class BuildPlan:
    db: Database
    out: str
    fmt: str = "png"  # "png" or "wds"
    mode: str = "auto"  # see writers.encode_png
    shard_size: int = 1000

    @property
    def total_samples(self) -> int:
        return self.db.num_classes * self.db.num_instances

    def manifest(self) -> dict:
        return {**self.db.manifest(), "fdsl_version": __version__, "format": self.fmt, "mode": self.mode,
                "num_classes": self.db.num_classes, "num_instances": self.db.num_instances,
                **({"samples_per_shard": self.shard_size} if self.fmt == "wds" else {})}


def parse_class_range(text: str | None, num_classes: int) -> tuple[int, int]:
    """``"A:B"`` -> (A, B) within [0, num_classes]; either side may be empty."""
    if not text:
        return 0, num_classes
    try:
        first, _, last = text.partition(":")
        start = int(first) if first else 0
        stop = int(last) if last else num_classes
    except ValueError:
        raise UserError(f"--class-range {text!r} is not A:B (e.g. 0:500)") from None
    if not 0 <= start < stop <= num_classes:
        raise UserError(f"--class-range {text} is outside the {num_classes} classes; "
                        f"use A:B with 0 <= A < B <= {num_classes}")
    return start, stop


def check_manifest(plan: BuildPlan) -> None:
    """Refuse to mix databases or options in one folder; write the manifest of this one."""
    path = os.path.join(plan.out, MANIFEST)
    wanted = json.loads(json.dumps(plan.manifest()))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            try:
                found = json.load(handle)
            except json.JSONDecodeError:
                raise UserError(f"{path} is not valid JSON; delete it if that folder holds nothing else") from None
        if found.get("database") != wanted["database"]:
            raise UserError(f"{plan.out} holds a {found.get('database')!r} database, not {wanted['database']!r}; "
                            f"choose another --out")
        differing = sorted(k for k in set(found) | set(wanted)
                           if k != "fdsl_version" and found.get(k) != wanted.get(k))
        if differing:
            raise UserError(f"{plan.out} was built with other settings (differing: {', '.join(differing)}); "
                            f"re-run with the same options to resume, or choose another --out")
        return
    os.makedirs(plan.out, exist_ok=True)
    writers.atomic_write_json(path, wanted)


# -- work units (run in worker processes) -----------------------------------------------------------
_plan: BuildPlan | None = None


def _init_worker(plan: BuildPlan) -> None:
    global _plan
    _plan = plan
    import cv2

    cv2.setNumThreads(1)  # one core per worker: parallelism comes from the process pool


def _write_param_files(plan: BuildPlan, cls: int, params) -> None:
    for relative, data in plan.db.param_files(cls, params).items():
        path = os.path.join(plan.out, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        writers.atomic_write(path, data)


def build_class(cls: int) -> int:
    """Render the missing images of one class; returns how many it wrote."""
    plan, db = _plan, _plan.db
    paths = [os.path.join(plan.out, db.image_path(cls, i)) for i in range(db.num_instances)]
    missing = [i for i, path in enumerate(paths) if not os.path.exists(path)]
    if not missing:
        return 0
    for directory in {os.path.dirname(paths[i]) for i in missing}:
        os.makedirs(directory, exist_ok=True)
        writers.remove_temporaries(directory)
    params = db.class_params(cls)
    _write_param_files(plan, cls, params)
    for inst, image in zip(missing, db.render(cls, params, missing)):
        writers.atomic_write(paths[inst], writers.encode_png(image, plan.mode))
    return len(missing)


def sample_key(db: Database, cls: int, inst: int) -> str:
    # webdataset splits a member name at its first dot: keys must have none
    return f"{db.class_name(cls)}_{inst:06d}".replace(".", "_")


def build_shard(index: int) -> int:
    """Render one webdataset shard (samples index*S .. index*S+S-1, class-major); returns its size."""
    plan, db = _plan, _plan.db
    path = os.path.join(plan.out, SHARD_PATTERN.format(index))
    if os.path.exists(path):
        return 0
    first = index * plan.shard_size
    last = min(first + plan.shard_size, plan.total_samples)
    samples = []
    for cls in range(first // db.num_instances, (last - 1) // db.num_instances + 1):
        lo = max(first, cls * db.num_instances) - cls * db.num_instances
        hi = min(last, (cls + 1) * db.num_instances) - cls * db.num_instances
        params = db.class_params(cls)
        _write_param_files(plan, cls, params)
        for inst, image in zip(range(lo, hi), db.render(cls, params, range(lo, hi))):
            members = {"png": writers.encode_png(image, plan.mode), "cls": str(cls).encode()}
            samples.append((sample_key(db, cls, inst), members))
    writers.atomic_write(path, writers.tar_bytes(samples))
    return len(samples)


# -- driver ------------------------------------------------------------------------------------------
def plan_units(plan: BuildPlan, start: int, stop: int) -> tuple[list[int], list[int]]:
    """(unit ids, images per unit) for classes [start, stop)."""
    if plan.fmt == "png":
        return list(range(start, stop)), [plan.db.num_instances] * (stop - start)
    per_class, size = plan.db.num_instances, plan.shard_size
    first_shard = -(-start * per_class // size)  # the shards that START inside the range
    last_shard = -(-stop * per_class // size)
    shards = list(range(first_shard, last_shard))
    counts = [min(size, plan.total_samples - k * size) for k in shards]
    return shards, counts


def build(plan: BuildPlan, workers: int = 1, class_range: str | None = None, progress: bool = True) -> dict:
    """Render the database; returns {"written": images written, "skipped": images already there}."""
    if plan.fmt not in ("png", "wds"):
        raise UserError(f"--format {plan.fmt!r} is not png or wds")
    if plan.mode not in writers.MODES:
        raise UserError(f"--mode {plan.mode!r} is not one of {', '.join(writers.MODES)}")
    if plan.shard_size <= 0:
        raise UserError("--shard-size must be at least 1")
    if workers < 1:
        raise UserError("--workers must be at least 1")
    start, stop = parse_class_range(class_range, plan.db.num_classes)
    check_manifest(plan)
    units, counts = plan_units(plan, start, stop)
    work = build_class if plan.fmt == "png" else build_shard
    written = 0
    bar = tqdm(total=sum(counts), unit="img", desc=f"{plan.db.name} -> {plan.out}", disable=not progress,
               smoothing=0.05)
    if workers == 1:
        _init_worker(plan)
        results = map(work, units)
    else:
        context = multiprocessing.get_context("fork")
        pool = context.Pool(workers, initializer=_init_worker, initargs=(plan,))
        results = pool.imap(work, units)
    try:
        for count, n in zip(counts, results):
            written += n
            bar.update(count)
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()
    return {"written": written, "skipped": sum(counts) - written}
