"""--cache-images: the decoded images in one shared-memory cache for all loader workers."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fdsl.data import cache
from fdsl.data.images import read_image
from fdsl.errors import UserError
from tests.helpers.rendered_images import cached_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cache_holds_the_files_pixels_and_remembers_unreadable_ones(tmp_path):
    paths = cached_folder(tmp_path)
    with open(paths[3], "r+b") as f:
        f.truncate(50)
    built = cache.for_folder(paths, "on", workers=2, log=lambda _: None)
    for i, path in enumerate(paths):
        if i == 3:
            with pytest.raises(ValueError, match="unreadable when cached"):
                built.get(i)
        else:
            np.testing.assert_array_equal(built.get(i), read_image(path))
    assert built.nbytes == 8 * 32 * 32 and list(built.errors) == [3]  # its header was whole


def test_a_cache_that_does_not_fit_is_refused_with_the_figure(tmp_path, monkeypatch):
    paths = cached_folder(tmp_path, count=4)
    monkeypatch.setattr(cache, "available_bytes", lambda: 4000)
    assert cache.for_folder(paths, "auto") is None
    with pytest.raises(UserError, match=r"4 decoded images need 4\.0 KB, more than 80% of the 3\.9 KB"):
        cache.for_folder(paths, "on")


def _worker_memory(_):
    """(RssAnon kB, whether the cache's pages are a shared mapping) in the reading worker."""
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    start = ds.cache.pixels.ctypes.data
    with open("/proc/self/maps") as f:
        shared = any(int(line.split("-")[0], 16) <= start < int(line.split()[0].split("-")[1], 16)
                     and line.split()[1].endswith("s") for line in f)
    with open("/proc/self/status") as f:
        anon = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    return anon, shared


class _ReadAll(torch.utils.data.Dataset):
    """Each item: read every cached image (touch every page), then report the worker's memory."""

    def __init__(self, cached):
        self.cache = cached

    def __len__(self):
        return 4

    def __getitem__(self, i):
        before = _worker_memory(None)[0]
        total = sum(int(self.cache.get(k).sum()) for k in range(len(self.cache)))
        after, shared = _worker_memory(None)
        return torch.tensor([after - before, shared, total])


def test_workers_share_one_cache(tmp_path):
    paths = cached_folder(tmp_path, count=32, size=256)  # 2 MB of pixels
    built = cache.for_folder(paths, "on", log=lambda _: None)
    loader = DataLoader(_ReadAll(built), batch_size=1, num_workers=2)
    rows = torch.cat(list(loader))
    grown_kb, shared, total = rows[:, 0], rows[:, 1], rows[:, 2]
    assert shared.all() and (total == total[0]).all()
    assert grown_kb.max() < built.nbytes / 1024 / 4  # reading 2 MB of cache added no private copy
