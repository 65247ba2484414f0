"""Whether a device batch fits in memory, and the largest that does: an estimate from the peak bytes of a small
batch, then a bisection near it (a batch far too large is never rendered in part, nor bisected down from its
own size)."""
from __future__ import annotations

import gc
from collections.abc import Callable

import torch


def largest_batch_that_fits(render: Callable[[int], None], wanted: int, device: torch.device) -> int:
    """``wanted`` if ``render(wanted)`` fits in ``device``'s (CUDA) memory, else the largest count that does."""
    fits = memory_probe(render, torch.cuda.synchronize, release_cuda_memory)
    return largest_batch(fits, wanted, guess=images_that_fit(render, device))


def images_that_fit(render: Callable[[int], None], device: torch.device, sample: int = 16) -> int:
    """About how many images fit: free device memory over the peak bytes per image of a batch of ``sample``."""
    release_cuda_memory()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    render(sample)
    torch.cuda.synchronize(device)
    per_image = max(1, (torch.cuda.max_memory_allocated(device) - before) // sample)
    release_cuda_memory()
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(0.9 * free // per_image))


def release_cuda_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def memory_probe(render: Callable[[int], None], synchronize: Callable[[], None] = lambda: None,
                 release: Callable[[], None] = lambda: None) -> Callable[[int], bool]:
    """fits(n): whether ``render(n)`` runs without running out of device memory (``release`` frees it after)."""

    def fits(count: int) -> bool:
        try:
            render(count)
            synchronize()
            return True
        except torch.OutOfMemoryError:
            return False
        finally:
            release()

    return fits


def largest_batch(fits: Callable[[int], bool], wanted: int, guess: int | None = None) -> int:
    """``wanted`` if it fits, else the largest smaller batch that does (bisection; 0 if not even 1 does).

    With ``guess`` (an estimate of the largest, trusted to within 2x), a ``wanted`` above twice the guess is not
    tried, the search runs between the guess and twice it (or below it), and stops within 1/16: a few renders
    near the answer instead of halving down from a batch that may be thousands of times too large."""
    low, high = 0, wanted  # low fits (trivially for 0), high does not
    if (guess is None or wanted <= 2 * guess) and fits(wanted):
        return wanted
    if guess is not None and guess < high:
        if fits(guess):
            low, high = guess, min(high, 2 * guess)
        else:
            high = guess
    while high - low > (1 if guess is None else max(1, low // 16)):
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low
