"""The one way fdsl derives a seed from where a sample or a batch sits in a run.

A sample's augmentation (fdsl.data.samplers.Resumable), a device batch's render and augmentation
(fdsl.data.device.source) and a --gpu-augment step (fdsl.data.batch_augment.folder) draw from generators
seeded by ``derive_seed(seed, epoch, rank, position...)``: a pure function of those keys, so the same whatever
the worker count, and a run resumed mid-epoch sees what a run that never stopped saw.
"""
from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 63-bit seed hashed from ``keys`` by numpy's SeedSequence; each key is taken modulo 2**32 (so a key of
    -1, the memory probe's epoch, is one too)."""
    words = [int(key) & 0xFFFFFFFF for key in keys]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> 1)
