"""2D iterated function systems: FractalDB, 1p-frac and 2D-OFDB images.

Pure functions of (parameters, rng): no file I/O, nothing else of fdsl imported.
A system is an (N, 7) float64 array, one row per affine map ``a, b, c, d, e, f, p``:
``x' = a x + b y + e``, ``y' = c x + d y + f``, chosen with probability ``p``.
The hot loops (chaos game, rasteriser) are compiled with numba.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

PAD = 6
DRAW_TYPES = ("point_gray", "point_color", "patch_gray", "patch_color")
GRAY = 127


# -- systems -----------------------------------------------------------------------------------
def with_det_probabilities(maps: np.ndarray) -> np.ndarray:
    """Set column p to |ad - bc| normalised over the maps (uniform if all are singular)."""
    maps = np.array(maps, dtype=np.float64)
    det = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2])
    total = det.sum()
    maps[:, 6] = det / total if total > 0 else 1.0 / len(maps)
    return maps


def random_system(rng: np.random.Generator, min_maps: int = 2, max_maps: int = 7) -> np.ndarray:
    """FractalDB's candidate: N ~ U{min..max} maps with a..f ~ U(-1, 1)."""
    n = int(rng.integers(min_maps, max_maps + 1))
    maps = np.zeros((n, 7))
    maps[:, :6] = rng.uniform(-1.0, 1.0, size=(n, 6))
    return with_det_probabilities(maps)


def sigma_factor_system(rng: np.random.Generator, n_maps: int, sigma: float, margin: float = 0.1) -> np.ndarray:
    """Anderson & Farrell's sampler: each linear part is U diag(s1, s2) V^T with random rotations
    (and reflections), and sum over maps of (s1 + 2 s2) drawn in [sigma - margin, sigma + margin]."""
    if not (0 < sigma - margin and sigma + margin <= 3 * n_maps):
        raise ValueError(f"sigma {sigma} is out of reach of {n_maps} maps (0 < sigma <= {3 * n_maps})")
    remaining = rng.uniform(sigma - margin, sigma + margin)
    maps = np.zeros((n_maps, 7))
    for i in range(n_maps):
        after = n_maps - i - 1  # maps still to place; each can absorb at most 3
        if after == 0:  # the last pair is solved for: s1 + 2 s2 = remaining
            s1 = rng.uniform(max(remaining / 3, remaining - 2, 0.0), min(1.0, remaining))
            s2 = (remaining - s1) / 2
        else:
            s1 = rng.uniform(max(0.0, (remaining - 3 * after) / 3), min(1.0, remaining))
            s2 = rng.uniform(max(0.0, (remaining - 3 * after - s1) / 2), min(s1, (remaining - s1) / 2))
        remaining -= s1 + 2 * s2
        maps[i, :4] = (_rotation(rng) @ np.diag([s1, s2]) @ _rotation(rng).T).ravel()
    maps[:, 4:6] = rng.uniform(-1.0, 1.0, size=(n_maps, 2))
    return with_det_probabilities(maps)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    if rng.random() < 0.5:  # a reflection half of the time
        rot[:, 1] *= -1
    return rot


def perturb(base: np.ndarray, rng: np.random.Generator, delta: float) -> np.ndarray:
    """1p-frac: every a..f of every map times an independent factor ~ U(1 - delta, 1 + delta)."""
    maps = np.array(base, dtype=np.float64)
    maps[:, :6] *= rng.uniform(1 - delta, 1 + delta, size=(len(maps), 6))
    return with_det_probabilities(maps)


def apply_weight(maps: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """FractalDB instance: multiply column j (a..f) of every map by weight[j]; p is kept as saved."""
    out = np.array(maps, dtype=np.float64)
    out[:, :6] *= np.asarray(weight, dtype=np.float64)
    return out


def weight_table(interval: float) -> np.ndarray:
    """The published ``weights_<interval>.csv`` tables: for a, the factors 1-2i, 1-i, 1, 1+i, 1+2i;
    for b..f the same without the identity; a factor <= 0 becomes 0.01 (as in weights_0.5)."""
    factors = [1 - 2 * interval, 1 - interval, 1.0, 1 + interval, 1 + 2 * interval]
    factors = [round(f, 10) if f > 0 else 0.01 for f in factors]
    rows = []
    for column in range(6):
        for f in factors:
            if f == 1.0 and column > 0:
                continue
            row = np.ones(6)
            row[column] = f
            rows.append(row)
    return np.array(rows)


# -- chaos game --------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def selection_stream(n: int) -> np.ndarray:
    """The published renderer seeds map selection with 100 in every render, so the point cloud
    depends only on the maps; we keep that, so a CSV renders the published point cloud."""
    stream = np.random.RandomState(100).random_sample(n)
    stream.flags.writeable = False
    return stream


@njit(cache=True, nogil=True)
def _chaos_game(maps, cumulative, uniforms):
    n = uniforms.shape[0]
    points = np.empty((n, 2))
    x = 0.0
    y = 0.0
    points[0, 0] = 0.0
    points[0, 1] = 0.0
    last = cumulative.shape[0] - 1
    for i in range(n - 1):
        j = 0
        while j < last and uniforms[i] > cumulative[j]:
            j += 1
        nx = maps[j, 0] * x + maps[j, 1] * y + maps[j, 4]
        ny = maps[j, 2] * x + maps[j, 3] * y + maps[j, 5]
        x = nx
        y = ny
        points[i + 1, 0] = x
        points[i + 1, 1] = y
    return points


def chaos_game(maps: np.ndarray, iterations: int) -> np.ndarray:
    """``iterations`` points (the first is the origin) of the system's attractor, shape (n, 2)."""
    maps = np.ascontiguousarray(maps, dtype=np.float64)
    cumulative = np.cumsum(maps[:, 6])
    return _chaos_game(maps, cumulative, selection_stream(int(iterations)))


def to_pixels(points: np.ndarray, size: int, pad: int = PAD) -> tuple[np.ndarray, np.ndarray]:
    """Min-max rescale each axis into [pad, size - pad] as integer pixel coordinates.
    Non-finite points, and the 100 before the first one, are dropped (as published)."""
    return _to_pixels(np.ascontiguousarray(points, dtype=np.float64), int(size), int(pad))


@njit(cache=True, nogil=True)
def _to_pixels(points, size, pad):
    end = points.shape[0]
    for i in range(points.shape[0]):
        if not (np.isfinite(points[i, 0]) and np.isfinite(points[i, 1])):
            end = max(i - 100, 0)
            break
    low_x, high_x, low_y, high_y = np.inf, -np.inf, np.inf, -np.inf
    for i in range(end):
        low_x = min(low_x, points[i, 0])
        high_x = max(high_x, points[i, 0])
        low_y = min(low_y, points[i, 1])
        high_y = max(high_y, points[i, 1])
    span_x = high_x - low_x if high_x > low_x else 1.0
    span_y = high_y - low_y if high_y > low_y else 1.0
    scale = size - 2 * pad
    xs = np.empty(end, np.int64)
    ys = np.empty(end, np.int64)
    for i in range(end):
        xs[i] = int((points[i, 0] - low_x) / span_x * scale + pad)
        ys[i] = int((points[i, 1] - low_y) / span_y * scale + pad)
    return xs, ys


# -- rasterisers (the image is y-up: row = size - 1 - y) -----------------------------------------
@njit(cache=True, nogil=True)
def _draw_points(xs, ys, size, colors):
    image = np.zeros((size, size, colors.shape[1]), np.uint8)
    n_colors = colors.shape[0]
    for i in range(xs.shape[0]):
        row = size - 1 - ys[i]
        if 0 <= row < size and 0 <= xs[i] < size:
            image[row, xs[i], :] = colors[i % n_colors]
    return image


@njit(cache=True, nogil=True)
def _draw_patches_gray(xs, ys, masks, size, value):
    # Each point REPLACES the 3x3 block at (x+1, y+1): off cells write black over earlier points.
    image = np.zeros((size, size), np.uint8)
    high = 0
    for i in range(xs.shape[0]):
        high = max(high, xs[i], ys[i])
    if high + 3 < size and xs.shape[0] > 0:  # every block inside (padding >= 4): no bounds tests, cells by table
        cells = np.empty((512, 9), np.uint8)
        for mask in range(512):
            for bit in range(9):
                cells[mask, bit] = value if (mask >> (8 - bit)) & 1 else 0
        for i in range(xs.shape[0]):
            block = cells[masks[i]]
            col = xs[i] + 1
            for dr in range(3):
                row = size - 2 - ys[i] - dr
                image[row, col] = block[3 * dr]
                image[row, col + 1] = block[3 * dr + 1]
                image[row, col + 2] = block[3 * dr + 2]
        return image
    for i in range(xs.shape[0]):
        for dr in range(3):
            r = ys[i] + 1 + dr
            if r >= size:
                break
            row = size - 1 - r
            for dc in range(3):
                c = xs[i] + 1 + dc
                if c < size:
                    image[row, c] = value if (masks[i] >> (8 - 3 * dr - dc)) & 1 else 0
    return image


@njit(cache=True, nogil=True)
def _draw_patches(xs, ys, masks, size, colors):
    # The colour version of _draw_patches_gray (kept apart: the 2D kernel is ~8x faster).
    channels = colors.shape[1]
    image = np.zeros((size, size, channels), np.uint8)
    n_colors = colors.shape[0]
    for i in range(xs.shape[0]):
        color = colors[i % n_colors]
        for dr in range(3):
            r = ys[i] + 1 + dr
            if r >= size:
                break
            row = size - 1 - r
            for dc in range(3):
                c = xs[i] + 1 + dc
                if c < size:
                    on = (masks[i] >> (8 - 3 * dr - dc)) & 1
                    for ch in range(channels):
                        image[row, c, ch] = color[ch] if on else 0
    return image


@lru_cache(maxsize=2)
def _palette(color: bool) -> np.ndarray:
    if not color:
        return np.full((1, 1), GRAY, np.uint8)
    # hue (i mod 128) / 128 with saturation = intensity = 0.75, as RGB
    import colorsys

    return np.array([[round(255 * v) for v in colorsys.hsv_to_rgb(k / 128, 0.75, 0.75)] for k in range(128)],
                    np.uint8)


def draw(xs: np.ndarray, ys: np.ndarray, size: int, draw_type: str = "patch_gray",
         rng: np.random.Generator | None = None) -> np.ndarray:
    """Rasterise pixel coordinates: uint8 HxW for *_gray, HxWx3 (RGB) for *_color.
    ``patch_*`` needs ``rng`` for the random 9-bit masks (1..511), one per point."""
    if draw_type not in DRAW_TYPES:
        raise ValueError(f"draw type {draw_type!r} is not one of {DRAW_TYPES}")
    shape, color = draw_type.split("_")
    palette = _palette(color == "color")
    if shape == "point":
        image = _draw_points(xs, ys, size, palette)
        return image[:, :, 0] if color == "gray" else image
    masks = rng.integers(1, 512, size=len(xs), dtype=np.int64)
    if color == "gray":
        return _draw_patches_gray(xs, ys, masks, size, GRAY)
    return _draw_patches(xs, ys, masks, size, palette)


def flip(image: np.ndarray, kind: int) -> np.ndarray:
    """The 4 published flips: 0 none, 1 top-bottom, 2 left-right, 3 both."""
    if kind & 1:
        image = image[::-1]
    if kind & 2:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def filling_rate(image: np.ndarray) -> float:
    """Fraction of non-zero pixels."""
    plane = image if image.ndim == 2 else image.max(axis=2)
    return float(np.count_nonzero(plane)) / plane.size


# -- FractalDB category search -------------------------------------------------------------------
def search_category(rng: np.random.Generator, rate: float = 0.2, points: int = 100_000,
                    size: int = 512, pad: int = PAD, max_tries: int = 100_000) -> np.ndarray:
    """Draw random systems until one's point rendering fills at least ``rate`` of the image."""
    for _ in range(max_tries):
        maps = random_system(rng)
        cloud = chaos_game(maps, points)
        if not np.isfinite(cloud).all():
            continue
        xs, ys = to_pixels(cloud, size, pad)
        if _coverage(xs, ys, size) >= rate:
            return maps
    raise RuntimeError(f"no system reached filling rate {rate} in {max_tries} tries")


@njit(cache=True, nogil=True)
def _count_distinct(xs, ys, size):
    seen = np.zeros(size * size, np.uint8)
    count = 0
    for i in range(xs.shape[0]):
        k = ys[i] * size + xs[i]
        if seen[k] == 0:
            seen[k] = 1
            count += 1
    return count


def _coverage(xs: np.ndarray, ys: np.ndarray, size: int) -> float:
    return _count_distinct(xs, ys, size) / (size * size)


def render_points(maps: np.ndarray, iterations: int, size: int, pad: int = PAD) -> tuple[np.ndarray, np.ndarray]:
    """Chaos game + rescale: the pixel coordinates shared by every draw of one system."""
    return to_pixels(chaos_game(maps, iterations), size, pad)
