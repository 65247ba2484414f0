"""The database builder: renders a registered database into PNG folders or webdataset shards.

Work is split into units that own disjoint output files: a class (PNG folders) or a shard
(webdataset, samples in class-major order). Every image is a pure function of (seed, class,
instance), so 1 worker, 8 workers or 64 ranks write the same bytes. Ranks (mpirun, srun; see
fdsl.launch) take contiguous blocks of the classes; ``--workers`` processes share each rank's block.
A unit whose files all exist is skipped, so a re-run resumes; files are written under a
temporary name and renamed, so a killed run never leaves half a file.
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

from tqdm import tqdm

from fdsl import __version__
from fdsl.data import png, start_method, writers
from fdsl.data.registry import Database
from fdsl.errors import UserError
from fdsl.launch import Launch

MANIFEST = "manifest.json"
SHARD_PATTERN = "SHARDS-{:06d}.tar"
SHARD_NAME = re.compile(r"SHARDS-(\d{6})\.tar$")
RANKS_DIR = ".fdsl-ranks"  # per-launch "rank R is done" markers, removed by rank 0 after its check
# Manifest keys that describe the software, not the database: a resume may differ in them.
INFORMATIONAL = ("fdsl_version", "png_encoder")


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
                "png_encoder": png.describe(),
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
    """Refuse to mix databases or options in one folder; write the manifest of this one.
    Safe when many ranks start at once: the first complete manifest to land wins, the others compare."""
    path = os.path.join(plan.out, MANIFEST)
    wanted = json.loads(json.dumps(plan.manifest()))
    if not os.path.exists(path):
        os.makedirs(plan.out, exist_ok=True)
        create_once(path, (json.dumps(wanted, indent=2, sort_keys=True) + "\n").encode())
    with open(path, encoding="utf-8") as handle:
        try:
            found = json.load(handle)
        except json.JSONDecodeError:
            raise UserError(f"{path} is not valid JSON; delete it if that folder holds nothing else") from None
    if found.get("database") != wanted["database"]:
        raise UserError(f"{plan.out} holds a {found.get('database')!r} database, not {wanted['database']!r}; "
                        f"choose another --out")
    differing = sorted(k for k in set(found) | set(wanted)
                       if k not in INFORMATIONAL and found.get(k) != wanted.get(k))
    if differing:
        raise UserError(f"{plan.out} was built with other settings (differing: {', '.join(differing)}); "
                        f"re-run with the same options to resume, or choose another --out")


def create_once(path: str, data: bytes) -> None:
    """Create ``path`` holding ``data`` unless it exists, atomically: the complete file is hard-linked
    into place, which fails if another process got there first (then its file stands)."""
    tmp = writers.temporary_name(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: last writer wins, still never half a file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def missing_instances(plan: BuildPlan, cls: int) -> list[int]:
    """Instances of class ``cls`` whose image file is absent (one directory listing per folder)."""
    relative = [plan.db.image_path(cls, i) for i in range(plan.db.num_instances)]
    present: dict[str, set] = {}
    for path in relative:
        folder = os.path.dirname(path)
        if folder not in present:
            full = os.path.join(plan.out, folder)
            present[folder] = set(os.listdir(full)) if os.path.isdir(full) else set()
    return [i for i, path in enumerate(relative) if os.path.basename(path) not in present[os.path.dirname(path)]]


def build_class(cls: int) -> int:
    """Render the missing images of one class; returns how many it wrote."""
    plan, db = _plan, _plan.db
    missing = missing_instances(plan, cls)
    if not missing:
        return 0
    paths = {i: os.path.join(plan.out, db.image_path(cls, i)) for i in missing}
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


def rank_block(start: int, stop: int, launch: Launch) -> tuple[int, int]:
    """This rank's contiguous share of classes [start, stop): sizes differ by at most one."""
    span = stop - start
    return start + span * launch.rank // launch.world_size, start + span * (launch.rank + 1) // launch.world_size


def check_options(plan: BuildPlan, workers: int) -> None:
    if plan.fmt not in ("png", "wds"):
        raise UserError(f"--format {plan.fmt!r} is not png or wds")
    if plan.mode not in writers.MODES:
        raise UserError(f"--mode {plan.mode!r} is not one of {', '.join(writers.MODES)}")
    if plan.shard_size <= 0:
        raise UserError("--shard-size must be at least 1")
    if workers < 1:
        raise UserError("--workers must be at least 1")


def build(plan: BuildPlan, workers: int = 1, class_range: str | None = None, progress: bool = True,
          launch: Launch | None = None) -> dict:
    """Render the database, or this rank's share of it. Returns {"written": images written,
    "skipped": images already there, "classes": (first, stop) of this rank, "missing": units rank 0
    found incomplete after every rank finished (multi-rank builds only)}."""
    check_options(plan, workers)
    launch = launch or Launch()
    start, stop = parse_class_range(class_range, plan.db.num_classes)
    first, last = rank_block(start, stop, launch)
    check_manifest(plan)
    units, counts = plan_units(plan, first, last)
    desc = f"{plan.db.name} -> {plan.out}" + (f" (rank 0/{launch.world_size})" if launch.distributed else "")
    written = run_units(plan, units, counts, workers, progress and launch.rank == 0, desc)
    result = {"written": written, "skipped": sum(counts) - written, "classes": (first, last), "missing": []}
    if launch.distributed:
        share = f"classes {first}-{last - 1}" if last > first else "no classes (more ranks than classes)"
        print(f"rank {launch.rank}/{launch.world_size}: {share}, wrote {written}, skipped {result['skipped']}",
              flush=True)
        wait_for_ranks(plan.out, launch)
        if launch.rank == 0:
            result["missing"] = incomplete_units(plan, start, stop)
    return result


def run_units(plan: BuildPlan, units: list[int], counts: list[int], workers: int, progress: bool,
              desc: str) -> int:
    """Build the units in a pool of ``workers`` processes (or in this one); returns images written."""
    work = build_class if plan.fmt == "png" else build_shard
    written = 0
    bar = tqdm(total=sum(counts), unit="img", desc=desc, disable=not progress, smoothing=0.05)
    if workers == 1 or len(units) <= 1:
        _init_worker(plan)
        results = map(work, units)
    else:
        pool = start_method.context().Pool(min(workers, len(units)), initializer=_init_worker, initargs=(plan,))
        results = pool.imap(work, units)
    try:
        for count, n in zip(counts, results):
            written += n
            bar.update(count)
    finally:
        bar.close()
        if workers > 1 and len(units) > 1:
            pool.terminate()
    return written


def incomplete_units(plan: BuildPlan, start: int, stop: int) -> list[int]:
    """Classes (PNG) or shards (wds) of classes [start, stop) that lack a file."""
    if plan.fmt == "png":
        return [cls for cls in range(start, stop) if missing_instances(plan, cls)]
    shards, _ = plan_units(plan, start, stop)
    present = set(os.listdir(plan.out))
    return [k for k in shards if SHARD_PATTERN.format(k) not in present]


def wait_for_ranks(out: str, launch: Launch, poll_s: float = 0.5, note_every_s: float = 300.0) -> None:
    """Rank 0 returns once every rank of this launch has finished; the others return at once.
    Through MPI when mpi4py answered, else through one marker file per rank under <out>/.fdsl-ranks/<job>/."""
    if launch.mpi:
        from fdsl.launch import mpi_barrier

        mpi_barrier()
        return
    job = re.sub(r"[^A-Za-z0-9_.-]", "_", launch.job or f"ppid{os.getppid()}")
    folder = os.path.join(out, RANKS_DIR, job)
    os.makedirs(folder, exist_ok=True)
    writers.atomic_write(os.path.join(folder, f"rank-{launch.rank:06d}.done"), b"")
    if launch.rank != 0:
        return
    waited, noted = time.monotonic(), time.monotonic()
    while True:
        done = {name for name in os.listdir(folder) if name.endswith(".done")}
        if len(done) >= launch.world_size:
            break
        if time.monotonic() - noted > note_every_s:
            pending = [r for r in range(launch.world_size) if f"rank-{r:06d}.done" not in done]
            print(f"rank 0: waiting {time.monotonic() - waited:.0f} s for ranks {pending[:10]}"
                  f"{' ...' if len(pending) > 10 else ''} to finish", flush=True)
            noted = time.monotonic()
        time.sleep(poll_s)
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)
    try:
        os.rmdir(os.path.join(out, RANKS_DIR))
    except OSError:  # other launches' markers are still there
        pass


def shard_sample_count(urls: list[str]) -> tuple[int, str] | None:
    """(samples in these shards, how it was found) from the manifest.json fdsl wrote beside them, or None
    when any shard has no such manifest (then the caller keeps the published epoch rule)."""
    total, manifests = 0, {}
    for url in urls:
        folder, name = os.path.split(url)
        match = SHARD_NAME.search(name)
        if folder not in manifests:
            try:
                with open(os.path.join(folder, MANIFEST), encoding="utf-8") as handle:
                    manifests[folder] = json.load(handle)
            except (OSError, ValueError):
                manifests[folder] = None
        manifest = manifests[folder]
        if not match or not manifest or manifest.get("format") != "wds" or "samples_per_shard" not in manifest:
            return None
        size = int(manifest["samples_per_shard"])
        samples = int(manifest["num_classes"]) * int(manifest["num_instances"])
        total += max(0, min(size, samples - int(match.group(1)) * size))
    return total, f"{MANIFEST} beside the shards ({len(urls)} shards)"
