"""Batched renderers in torch: the pieces the per-family modules share (gpu_ifs, gpu_contour).

A batched renderer takes per-sample parameter tensors and a ``torch.Generator`` and returns a uint8
batch ``(B, C, H, W)`` on the generator's device. CUDA and CPU tensors run the same code; the tests
use CPU tensors. The images are the same kind of image as the numba/OpenCV renderers' (same formulas,
same class parameters), not the same pixels: the random draws come from torch's generators.

Where several primitives cover one pixel, the CPU rasterisers keep the one drawn LAST. An indexed
assignment with repeated indices leaves the winner undefined on CUDA, so every write here carries an
integer key that grows with the drawing order and :func:`latest_keys` keeps the largest key per pixel
(``scatter_reduce`` with ``amax``: the same result on every run and device).
"""
from __future__ import annotations

import torch


def canvas_index(image: torch.Tensor, row: torch.Tensor, col: torch.Tensor, size: int, images: int,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Flat index into ``images`` canvases of size x size for writes at (image, row, col). Writes that are
    invalid or off the canvas get the index ``images * size * size``, which :func:`latest_keys` drops."""
    inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
    if valid is not None:
        inside &= valid
    index = (image * size + row) * size + col
    return torch.where(inside, index, torch.full_like(index, images * size * size))


def latest_keys(num_pixels: int, index: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(num_pixels,) holding, per pixel, the largest key written to it, or -1 where nothing was.
    Writes with index ``num_pixels`` (see :func:`canvas_index`) are dropped."""
    canvas = torch.full((num_pixels + 1,), -1, dtype=keys.dtype, device=keys.device)
    canvas.scatter_reduce_(0, index, keys, reduce="amax", include_self=True)
    return canvas[:num_pixels]


def to_device(tensor: torch.Tensor, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Host -> device without a stream synchronisation: a blocking ``.to('cuda')`` waits for everything already
    queued (the previous training step) before it returns, which would leave the GPU idle while the next batch
    is prepared. The tensors copied here are small per-batch parameters, freshly made on the host."""
    return tensor.to(device=device, dtype=dtype, non_blocking=True)


def device_generator(device, seed: int) -> torch.Generator:
    """A seeded generator for the random numbers drawn on ``device``. The meta device (the CPU tests' stand-in
    for a GPU: shapes and devices, no data) has no generator of its own and draws nothing, so a CPU one serves;
    draws name the device they are made on (``device=``), never the generator's."""
    device = torch.device(device)
    return torch.Generator("cpu" if device.type == "meta" else device).manual_seed(seed)


_CONSTANTS: dict = {}


def constant(key, values, device, dtype: torch.dtype) -> torch.Tensor:
    """A constant table (Perlin gradients, palette, normalisation) on ``device``, copied there once."""
    entry = (key, str(device), dtype)
    if entry not in _CONSTANTS:
        _CONSTANTS[entry] = torch.as_tensor(values, dtype=dtype).to(device)
    return _CONSTANTS[entry]
