"""webdataset shards (`-w --trainshards 'P/SHARDS-{000000..000099}.tar'`): samples are <key>.png (or jpg)
plus <key>.cls holding the class id as ASCII (docs/training.md).

Shards are split by rank then by DataLoader worker; the shard order is reshuffled every pass and samples go
through a small shuffle buffer. Fixed here (D12): works without --no-prefetcher, shuffles shards, the buffer
is bounded (not dataset_size), and a missing or truncated shard is one clear error naming it.
"""
from __future__ import annotations

import io
import os
import random
import re
import tarfile

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from fdsl.errors import UserError

IMAGE_KEYS = ("png", "jpg", "jpeg", "JPEG")


def expand(pattern: str) -> list[str]:
    """The shard names of a pattern, as webdataset spells them: ``{000000..000099}`` ranges (zero-padded to
    the width of the first bound), ``{a,b}`` alternatives, and ``::`` between patterns. Written here so that
    local shards need no webdataset (it is optional: only remote URLs go through it)."""
    urls = [url for part in pattern.split("::") if part for url in _brace(part)]
    if not urls:
        raise UserError(f"--trainshards {pattern!r} names no shards")
    return urls


_BRACE = re.compile(r"\{([^{}]*)\}")


def _brace(pattern: str) -> list[str]:
    found = _BRACE.search(pattern)
    if not found:
        return [pattern]
    head, body, tail = pattern[:found.start()], found[1], pattern[found.end():]
    bounds = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if bounds:
        width, low, high = len(bounds[1]), int(bounds[1]), int(bounds[2])
        choices = [f"{i:0{width}d}" for i in range(low, high + 1)]
    else:
        choices = body.split(",")
    return [url for choice in choices for url in _brace(head + choice + tail)]


def webdataset_module():
    try:
        import webdataset
    except ImportError:
        raise UserError("remote shards (pipe:, http:, s3: ...) are read through the webdataset package, which is "
                        "not installed: pip install webdataset, or copy the shards to a local folder") from None
    return webdataset


def default_size(pattern: str, num_classes: int) -> int:
    """Published default epoch length: classes x 2000 for '_2ki' shards, else classes x 1000."""
    return num_classes * (2000 if "_2ki" in pattern else 1000)


def read_local_tar(path: str):
    """Samples of one tar ({'__key__', ext: bytes}), grouped by key. Unlike a plain tarfile stream this also
    notices a file cut exactly at a member boundary: a complete tar ends with two zero blocks."""
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        sample: dict = {}
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = os.path.basename(member.name).partition(".")
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample.setdefault("__key__", key)
            sample[ext] = tar.extractfile(member).read()
        if os.path.getsize(path) < tar.offset + 2 * tarfile.BLOCKSIZE:
            raise tarfile.ReadError("no end-of-archive marker")
        if sample:
            yield sample


class ShardDataset(IterableDataset):
    def __init__(self, pattern: str, transform, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle_buffer: int = 1000):
        self.urls = expand(pattern)
        self.transform = transform
        self.rank, self.world_size = rank, world_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_urls(self, worker: int, num_workers: int) -> list[str]:
        consumers = self.world_size * num_workers
        me = self.rank * num_workers + worker
        if len(self.urls) >= consumers:
            return self.urls[self.rank::self.world_size][worker::num_workers]
        return [self.urls[me % len(self.urls)]]  # fewer shards than readers: share them, never starve

    def _samples(self, url: str):
        try:
            if "://" not in url and not url.startswith("pipe:"):
                yield from read_local_tar(url)
            else:  # pipe:, http(s):, ... through webdataset's openers
                wds = webdataset_module()
                yield from wds.tarfile_to_samples(handler=wds.reraise_exception)([{"url": url}])
        except (tarfile.TarError, OSError, EOFError) as err:
            raise UserError(f"shard {url} is missing, truncated or corrupt ({err}); re-write or remove it") from None

    def _decode(self, sample: dict, url: str):
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        if key is None or "cls" not in sample:
            raise UserError(f"shard {url}: sample {sample.get('__key__')} lacks .png/.jpg or .cls")
        img = Image.open(io.BytesIO(sample[key])).convert("RGB")
        target = int(sample["cls"].decode().strip())
        return (self.transform(img) if self.transform else img), target

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        urls = self.my_urls(worker, num_workers)
        rng = random.Random(hash((self.seed, self.epoch, self.rank, worker)))
        buffer: list = []
        while True:  # the loop takes as many batches as one epoch needs, re-reading shards if required
            rng.shuffle(urls)
            for url in urls:
                for sample in self._samples(url):
                    buffer.append((sample, url))
                    if len(buffer) >= self.shuffle_buffer:
                        yield self._decode(*buffer.pop(rng.randrange(len(buffer))))
            while buffer and len(buffer) >= self.shuffle_buffer // 2:
                yield self._decode(*buffer.pop(rng.randrange(len(buffer))))


class LimitedLoader:
    """A loader over an endless stream that yields exactly `num_batches` per epoch and reports that length."""

    def __init__(self, loader: torch.utils.data.DataLoader, num_batches: int):
        self.loader = loader
        self.num_batches = num_batches
        self.dataset = loader.dataset
        self._skip = 0

    def __len__(self) -> int:
        return self.num_batches

    def skip(self, batches: int) -> None:
        """The next epoch starts at this batch. A shard stream cannot seek: the skipped batches are read and
        dropped (their order and augmentation are a function of (seed, epoch, rank, worker), so the rest is
        what an uninterrupted run would have seen)."""
        self._skip = batches

    def __iter__(self):
        skip, self._skip = self._skip, 0
        for i, batch in enumerate(self.loader):
            if i >= self.num_batches:
                break
            if i >= skip:
                yield batch
