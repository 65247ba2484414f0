"""Every image of a training folder decoded once into one shared uint8 buffer (``--cache-images``).

The buffer is one anonymous shared mapping (``mmap`` MAP_SHARED), made and filled before the DataLoader
forks its workers: every worker reads the same physical pages, so N workers cost one copy of the images,
not N (a worker's private memory does not grow as it reads; tests/data/test_cache.py checks). It is filled by
forked processes writing their share of the images straight into it. The size is not limited by /dev/shm.

``auto`` (the default) caches a folder whose decoded images need at most ``AUTO_SHARE`` of the memory
available now (split between the ranks on the node); ``on`` caches one that fits in ``ON_SHARE`` and
refuses with the figures otherwise; ``off`` reads the files every time.
"""
from __future__ import annotations

import mmap
import os
import time

import numpy as np

from fdsl.data import start_method
from fdsl.data.images import image_shape, read_image
from fdsl.errors import UserError

AUTO_SHARE = 0.25  # of the available memory, for --cache-images auto
ON_SHARE = 0.8  # the most --cache-images on may take
SAMPLE = 64  # files whose headers estimate a folder's size before every header is read


class ImageCache:
    """``get(i)``: the uint8 pixels of image i (a read-only view into the shared buffer)."""

    def __init__(self, shapes: np.ndarray, errors: dict[int, str] | None = None):
        self.shapes = shapes  # (N, 3) height, width, channels; 0 rows for files unreadable at caching
        sizes = shapes.prod(1)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.nbytes = int(self.offsets[-1])
        self.buffer = mmap.mmap(-1, max(1, self.nbytes))  # anonymous and MAP_SHARED: inherited by forks
        self.pixels = np.frombuffer(self.buffer, np.uint8)
        self.errors = dict(errors or {})

    def __len__(self) -> int:
        return len(self.shapes)

    def __reduce__(self):
        raise TypeError("an ImageCache is shared with forked DataLoader workers only (start method 'fork')")

    def get(self, index: int) -> np.ndarray:
        if index in self.errors:
            raise ValueError(self.errors[index])
        height, width, channels = self.shapes[index]
        start = self.offsets[index]
        flat = self.pixels[start:start + height * width * channels]
        flat.flags.writeable = False
        return flat.reshape((height, width) if channels == 1 else (height, width, channels))

    def put(self, index: int, pixels: np.ndarray) -> None:
        shape = tuple(self.shapes[index])
        found = pixels.shape[:2] + ((pixels.shape[2],) if pixels.ndim == 3 else (1,))
        if found != shape:
            raise ValueError(f"decoded to {found}, its header said {shape}")
        start = self.offsets[index]
        self.pixels[start:start + pixels.size] = pixels.reshape(-1)


# -- building ------------------------------------------------------------------------------------------------
def header_shapes(paths: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    shapes = np.zeros((len(paths), 3), np.int64)
    errors = {}
    for i, path in enumerate(paths):
        try:
            shapes[i] = image_shape(path)
        except (OSError, ValueError, SyntaxError) as err:
            errors[i] = f"unreadable when cached: {err}"
    return shapes, errors


def estimate_bytes(paths: list[str]) -> int:
    """The decoded size of all ``paths`` from the headers of at most SAMPLE of them, evenly spread."""
    picks = sorted(set(np.linspace(0, len(paths) - 1, min(SAMPLE, len(paths))).round().astype(int).tolist()))
    shapes, _ = header_shapes([paths[i] for i in picks])
    return int(shapes.prod(1).mean() * len(paths))


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (the total physical memory where that file is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def local_ranks() -> int:
    """Processes of this job on this node, each holding its own cache (torchrun, OpenMPI, SLURM variables)."""
    for name in ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


_FILLING: tuple | None = None  # (cache, paths) for the forked fill processes


def _fill(indices: list[int]) -> dict[int, str]:
    cache, paths = _FILLING
    errors = {}
    for i in indices:
        try:
            cache.put(i, read_image(paths[i]))
        except (OSError, ValueError, SyntaxError) as err:
            errors[i] = f"unreadable when cached: {err}"
    return errors


def fill(cache: ImageCache, paths: list[str], workers: int) -> None:
    """Decode every readable image into the cache, split over ``workers`` forked processes."""
    global _FILLING
    todo = [i for i in range(len(paths)) if i not in cache.errors]
    chunks = [todo[k:k + 256] for k in range(0, len(todo), 256)]
    _FILLING = (cache, paths)
    try:
        if workers > 1 and len(chunks) > 1 and start_method.forks():  # the children write into the inherited map
            with start_method.context().Pool(min(workers, len(chunks))) as pool:
                for errors in pool.imap_unordered(_fill, chunks):
                    cache.errors.update(errors)
        else:
            for chunk in chunks:
                cache.errors.update(_fill(chunk))
    finally:
        _FILLING = None


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{n / 2**10:,.1f} KB"


def for_folder(paths: list[str], mode: str, workers: int = 1, log=print) -> ImageCache | None:
    """The cache of ``paths`` under ``--cache-images MODE`` (auto/on/off), or None when not caching."""
    if mode == "off" or not paths:
        return None
    if not start_method.forks():  # spawned workers do not inherit the shared map
        if mode == "auto":
            return None
        raise UserError(f"--cache-images on shares memory with forked DataLoader workers, but fdsl starts workers "
                        f"with {start_method.name()} here; drop --cache-images (or set "
                        f"{start_method.ENV}=fork where fork is safe)")
    share = AUTO_SHARE if mode == "auto" else ON_SHARE
    ranks = local_ranks()
    budget = int(available_bytes() * share / ranks)
    need = estimate_bytes(paths)
    if need <= budget:  # the estimate fits: read every header for the exact size
        shapes, errors = header_shapes(paths)
        need = int(shapes.prod(1).sum())
    if need > budget:
        if mode == "auto":
            return None
        per = f" per rank ({ranks} on this node)" if ranks > 1 else ""
        raise UserError(f"--cache-images: the {len(paths):,} decoded images need {_mb(need)}, more than "
                        f"{ON_SHARE:.0%} of the {_mb(available_bytes())} of memory available{per}; "
                        f"drop --cache-images (they are then read from disk)")
    start = time.perf_counter()
    cache = ImageCache(shapes, errors)
    fill(cache, paths, workers)
    log(f"cache: {len(paths):,} images decoded into {_mb(cache.nbytes)} of shared memory in "
        f"{time.perf_counter() - start:.1f} s" + (f" ({len(cache.errors)} unreadable)" if cache.errors else ""))
    return cache
