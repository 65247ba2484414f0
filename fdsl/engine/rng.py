"""Every random generator of a training process as plain values, so a resumed run replays the same
randomness (torch, numpy, random and CUDA; loadable with torch.load(weights_only=True))."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Every RNG is a function of (seed, rank, epoch), so a resumed run replays the same randomness."""
    value = (seed + rank) * 1_000_003 + epoch
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def rng_state() -> dict:
    """This process's generators as plain values (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "random": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["random"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def all_rng_states(info) -> list | None:
    """Every rank's generators, on rank 0 (None elsewhere). A collective: every rank calls it."""
    mine = rng_state()
    if not info.distributed:
        return [mine]
    out = [None] * info.world_size if info.is_main else None
    torch.distributed.gather_object(mine, out, dst=0)
    return out


class ResumeRng:
    """The loader, whose iterator is created first and then the resumed RNG state applied: creating the
    iterator draws from the generators exactly as in the run that was interrupted. `state` (a rank's
    rng_state(), or None) is applied once, at the first iterator."""

    def __init__(self, loader, state: dict | None = None):
        self.loader = loader
        self.state = state

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        state, self.state = self.state, None
        if state is not None:
            set_rng_state(state)
        yield from iterator
