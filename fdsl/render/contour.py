"""Radial contour images: RCDB (CVPR 2022) and VisualAtom (CVPR 2023).

A closed polygon of V vertices starts on an ellipse around a centre; L times every vertex moves
outward along its angle by a noisy amount and the polygon is drawn as a 1-px line in a random gray.
All geometry is defined on the published 512-px canvas and multiplied by ``size / 512``, so
``size=512`` is the published picture and other sizes are the same picture drawn smaller.

Pure functions of (parameters, numpy Generator); nothing here touches files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit

REFERENCE_SIZE = 512
NOISE_SPAN = 10000.0  # noise positions u ~ U(0, NOISE_SPAN)

# Ken Perlin's reference permutation (the "Improving Noise" table), repeated so i + 1 never wraps.
_PERM_256 = [
    151, 160, 137, 91, 90, 15, 131, 13, 201, 95, 96, 53, 194, 233, 7, 225, 140, 36, 103, 30, 69, 142,
    8, 99, 37, 240, 21, 10, 23, 190, 6, 148, 247, 120, 234, 75, 0, 26, 197, 62, 94, 252, 219, 203, 117,
    35, 11, 32, 57, 177, 33, 88, 237, 149, 56, 87, 174, 20, 125, 136, 171, 168, 68, 175, 74, 165, 71,
    134, 139, 48, 27, 166, 77, 146, 158, 231, 83, 111, 229, 122, 60, 211, 133, 230, 220, 105, 92, 41,
    55, 46, 245, 40, 244, 102, 143, 54, 65, 25, 63, 161, 1, 216, 80, 73, 209, 76, 132, 187, 208, 89,
    18, 169, 200, 196, 135, 130, 116, 188, 159, 86, 164, 100, 109, 198, 173, 186, 3, 64, 52, 217, 226,
    250, 124, 123, 5, 202, 38, 147, 118, 126, 255, 82, 85, 212, 207, 206, 59, 227, 47, 16, 58, 17, 182,
    189, 28, 42, 223, 183, 170, 213, 119, 248, 152, 2, 44, 154, 163, 70, 221, 153, 101, 155, 167, 43,
    172, 9, 129, 22, 39, 253, 19, 98, 108, 110, 79, 113, 224, 232, 178, 185, 112, 104, 218, 246, 97,
    228, 251, 34, 242, 193, 238, 210, 144, 12, 191, 179, 162, 241, 81, 51, 145, 235, 249, 14, 239,
    107, 49, 192, 214, 31, 181, 199, 106, 157, 184, 84, 204, 176, 115, 121, 50, 45, 127, 4, 150, 254,
    138, 236, 205, 93, 222, 114, 67, 29, 24, 72, 243, 141, 128, 195, 78, 66, 215, 61, 156, 180,
]
PERM = np.array(_PERM_256 * 2, dtype=np.int64)
# The gradient of each lattice cell, looked up instead of branched on. The widely used pnoise1
# maps hash bit 3 to a gradient of -1 (not -g): this asymmetry gives its measured range of
# +-0.952 and std 0.329, so it is kept on purpose.
GRADIENTS = np.where(PERM & 8, -1.0, (PERM & 7) + 1.0)


@njit(cache=True, inline="always")
def _perlin_at(x, gradients):
    floor_x = math.floor(x)
    cell = floor_x & 255
    t = x - floor_x
    fade = t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
    left = gradients[cell] * t
    right = gradients[cell + 1] * (t - 1.0)
    return (left + fade * (right - left)) * 0.4


@njit(cache=True)
def _perlin_flat(x, gradients, out):
    for i in range(x.size):
        out[i] = _perlin_at(x[i], gradients)


def perlin1d(x) -> np.ndarray:
    """Classic one-octave 1D gradient noise at positions ``x`` (0 at integers, range about +-0.952)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
    out = np.empty(flat.size, dtype=np.float64)
    _perlin_flat(flat, GRADIENTS, out)
    return out.reshape(np.shape(x))


@njit(cache=True, inline="always")
def _move_vertices(line, x, y, cos_k, sin_k, unit_u, noise_scale, noise_offset, width, wave, pix, gradients,
                   px, py):
    """Step every vertex of contour ``line`` outward by its noisy amount; integer pixels into px, py."""
    for k in range(x.shape[0]):
        nx = _perlin_at(unit_u[line, k, 0] * NOISE_SPAN, gradients) * noise_scale - noise_offset - wave[k]
        ny = _perlin_at(unit_u[line, k, 1] * NOISE_SPAN, gradients) * noise_scale - noise_offset - wave[k]
        x[k] -= cos_k[k] * (nx - width)
        y[k] -= sin_k[k] * (ny - width)
        px[k] = np.int32(min(max(x[k] * pix, -1e6), 1e6))
        py[k] = np.int32(min(max(y[k] * pix, -1e6), 1e6))


@njit(cache=True)
def _contours(cx, cy, rx, ry, unit_u, noise_scale, noise_offset, width, wave, pix, gradients, grays, canvas):
    """Grow the L contours from the ellipse and draw each as a closed 1-px polygon in its gray.
    Without a canvas (size 0) the integer vertices (L, V, 2) are returned instead."""
    lines, vertices = unit_u.shape[0], unit_u.shape[1]
    cos_k = np.empty(vertices)
    sin_k = np.empty(vertices)
    x = np.empty(vertices)
    y = np.empty(vertices)
    for k in range(vertices):
        theta = 2.0 * math.pi * k / vertices
        cos_k[k] = math.cos(theta)
        sin_k[k] = math.sin(theta)
        x[k] = cx + rx * cos_k[k]
        y[k] = cy + ry * sin_k[k]
    keep = canvas.shape[0] == 0
    out = np.empty((lines if keep else 0, vertices, 2), np.int32)
    px = np.empty(vertices, np.int64)
    py = np.empty(vertices, np.int64)
    for line in range(lines):
        _move_vertices(line, x, y, cos_k, sin_k, unit_u, noise_scale, noise_offset, width, wave, pix, gradients,
                       px, py)
        if keep:
            out[line, :, 0] = px
            out[line, :, 1] = py
            continue
        previous = vertices - 1
        for k in range(vertices):
            _line(canvas, px[previous], py[previous], px[k], py[k], grays[line])
            previous = k
    return out


@njit(cache=True, inline="always")
def _clip(width, height, x1, y1, x2, y2):
    """OpenCV's clipLine: (inside, x1, y1, x2, y2) with the segment cut to the canvas."""
    right, bottom = width - 1, height - 1
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int((a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int((a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int((a - x1) * (y2 - y1) / (x2 - x1))
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int((a - x2) * (y2 - y1) / (x2 - x1))
                x2 = a
                c2 = 0
    return (c1 | c2) == 0, x1, y1, x2, y2


@njit(cache=True, inline="always")
def _line(canvas, x1, y1, x2, y2, value):
    """A 1-px 8-connected segment, pixel for pixel as cv2.line/polylines (LINE_8) draw it: clipped
    as clipLine, then OpenCV's Bresenham walk from the left end. Drawn here because OpenCV's
    per-call cost dominated the many short contour segments."""
    height, width = canvas.shape
    if not (0 <= x1 < width and 0 <= x2 < width and 0 <= y1 < height and 0 <= y2 < height):
        inside, x1, y1, x2, y2 = _clip(width, height, x1, y1, x2, y2)
        if not inside:
            return
    dx = x2 - x1
    dy = y2 - y1
    if dx < 0:  # always walk left to right
        dx, dy, x1, y1 = -dx, -dy, x2, y2
    step_y = 1
    if dy < 0:
        dy, step_y = -dy, -1
    if dy > dx:  # steep: one pixel per row, the column steps when the error turns negative
        err = dy - 2 * dx
        for _ in range(dy + 1):
            canvas[y1, x1] = value
            if err < 0:
                err += 2 * dy - 2 * dx
                x1 += 1
            else:
                err -= 2 * dx
            y1 += step_y
    else:  # flat: one pixel per column
        err = dx - 2 * dy
        for _ in range(dx + 1):
            canvas[y1, x1] = value
            if err < 0:
                err += 2 * dx - 2 * dy
                y1 += step_y
            else:
                err -= 2 * dy
            x1 += 1


@dataclass(frozen=True)
class ContourShape:
    """Everything that fixes one contour image except its random noise draws (512-px units)."""

    vertices: int
    lines: int
    perlin: float  # Perlin coefficient P
    line_width: float  # outward offset w per line (the stroke itself is always 1 px)
    radius: float
    oval_x: float
    oval_y: float
    center_x: float
    center_y: float
    waves: tuple = ()  # VisualAtom frequencies n1, n2 (empty for RCDB)


def _grow(shape: ContourShape, rng: np.random.Generator, size: int, rcdb_noise: bool,
          canvas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw the random gray levels and noise of one image, then run the contour kernel.

    RCDB displaces by ``perlin * 2P - P``; VisualAtom by ``perlin * P - P - sum 0.5 sin(theta n)``.
    """
    grays = np.minimum(rng.integers(0, 257 if rcdb_noise else 256, shape.lines), 255).astype(np.uint8)
    unit_u = rng.random((shape.lines, shape.vertices, 2))
    wave = np.zeros(shape.vertices)
    if shape.waves:
        theta = 2.0 * np.pi * np.arange(shape.vertices) / shape.vertices
        for n in shape.waves:
            wave += 0.5 * np.sin(theta * n)
    scale = 2.0 * shape.perlin if rcdb_noise else shape.perlin
    points = _contours(
        shape.center_x, shape.center_y, shape.radius * shape.oval_x, shape.radius * shape.oval_y,
        unit_u, scale, shape.perlin, shape.line_width, wave, size / REFERENCE_SIZE, GRADIENTS, grays, canvas,
    )
    return grays, points


def contour_vertices(shape: ContourShape, grays_and_noise_rng: np.random.Generator, size: int,
                     rcdb_noise: bool) -> tuple[np.ndarray, np.ndarray]:
    """(gray levels (L,), integer vertices (L, V, 2) in pixels of a ``size`` canvas)."""
    return _grow(shape, grays_and_noise_rng, size, rcdb_noise, np.empty((0, 0), np.uint8))


def draw_contours(size: int, grays: np.ndarray, points: np.ndarray, background: int) -> np.ndarray:
    """A uint8 size x size gray image with each closed contour drawn 1 px wide in its gray (OpenCV;
    render_contour draws the same pixels in one compiled pass)."""
    canvas = np.full((size, size), background, dtype=np.uint8)
    for gray, contour in zip(grays.tolist(), points):
        cv2.polylines(canvas, [contour], True, gray, 1, cv2.LINE_8)
    return canvas


def render_contour(shape: ContourShape, rng: np.random.Generator, size: int, rcdb_noise: bool,
                   background: int) -> np.ndarray:
    """The image: contours grown and drawn in one compiled pass, no vertex array kept."""
    canvas = np.full((size, size), background, dtype=np.uint8)
    _grow(shape, rng, size, rcdb_noise, canvas)
    return canvas


# --- RCDB ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RCDBRanges:
    vertex_max: int = 200
    vertex_mean: float = 100.0
    line_min: int = 1
    line_max: int = 200
    perlin_min: float = 0.0
    perlin_max: float = 4.0
    line_width: float = 0.1
    radius_min: int = 0
    radius_max: int = 100
    oval_rate: float = 2.0
    start_pos: int = 400


def rcdb_class(rng: np.random.Generator, r: RCDBRanges) -> dict:
    """Per-class parameters; radius, oval rates and centre are redrawn per instance anyway."""
    return {
        "vertices": _truncated_exponential_count(rng, r.vertex_mean, r.vertex_max),
        "lines": int(rng.integers(r.line_min, r.line_max + 1)),
        "perlin": float(rng.uniform(r.perlin_min, r.perlin_max)),
        "line_width": float(rng.uniform(0.0, r.line_width)),
        **_rcdb_instance_geometry(rng, r),
    }


def _truncated_exponential_count(rng: np.random.Generator, mean: float, most: int) -> int:
    """int(Exponential(mean)) redrawn until 2 < V <= most, drawn in one step by inverting the CDF of
    the exponential restricted to [3, most + 1): the same law, without unbounded redraws."""
    kept_mass = -math.expm1(-(most + 1 - 3) / mean)
    value = 3.0 - mean * math.log1p(-rng.random() * kept_mass)
    return min(int(value), most)


def _rcdb_instance_geometry(rng: np.random.Generator, r: RCDBRanges) -> dict:
    return {
        "radius": int(rng.integers(r.radius_min, r.radius_max + 1)),
        "oval_x": float(rng.uniform(1.0, r.oval_rate)),
        "oval_y": float(rng.uniform(1.0, r.oval_rate)),
        **_center(rng, r.start_pos),
    }


def _center(rng: np.random.Generator, start_pos: int) -> dict:
    offsets = rng.integers(-start_pos, start_pos + 1, 2)
    return {"center_x": (REFERENCE_SIZE + int(offsets[0])) / 2, "center_y": (REFERENCE_SIZE + int(offsets[1])) / 2}


def rcdb_shape(class_params: dict, rng: np.random.Generator, r: RCDBRanges) -> ContourShape:
    """The instance's shape: class V, L, P, w with radius, oval rates and centre redrawn."""
    fields = {k: class_params[k] for k in ("vertices", "lines", "perlin", "line_width")}
    return ContourShape(**fields, **_rcdb_instance_geometry(rng, r))


def rcdb_image(class_params: dict, rng: np.random.Generator, size: int, r: RCDBRanges) -> np.ndarray:
    """One RCDB image: gray contours on white."""
    return render_contour(rcdb_shape(class_params, rng, r), rng, size, rcdb_noise=True, background=255)


# --- VisualAtom ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisualAtomRanges:
    vertex_min: int = 200
    vertex_max: int = 1000
    line_min: int = 1
    line_max: int = 200
    perlin_min: float = 0.0
    perlin_max: float = 4.0
    line_width: float = 0.1
    radius_min: int = 10
    radius_max: int = 60
    oval_rate: float = 2.0
    start_pos: int = 512
    nami1_min: int = 0
    nami1_max: int = 20
    nami2_min: int = 0
    nami2_max: int = 20


def visualatom_class(rng: np.random.Generator, r: VisualAtomRanges) -> dict:
    """Per-class parameters; only the centre is redrawn per instance."""
    params = {
        "vertices": int(rng.integers(r.vertex_min, r.vertex_max + 1)),
        "lines": int(rng.integers(r.line_min, r.line_max + 1)),
        "perlin": float(rng.uniform(r.perlin_min, r.perlin_max)),
        "line_width": float(rng.uniform(0.0, r.line_width)),
        "radius": int(rng.integers(r.radius_min, r.radius_max + 1)),
    }
    params["nami1"], params["nami2"] = _wave_pair(rng, r)
    params["oval_x"] = float(rng.uniform(1.0, r.oval_rate))
    params["oval_y"] = float(rng.uniform(1.0, r.oval_rate))
    return params


def _wave_pair(rng: np.random.Generator, r: VisualAtomRanges) -> tuple[int, int]:
    """n1, n2 with n1 != n2 unless n1 == 0 (redrawn n2 when a clash is unavoidable is skipped)."""
    n1 = int(rng.integers(r.nami1_min, r.nami1_max + 1))
    n2 = int(rng.integers(r.nami2_min, r.nami2_max + 1))
    only_clash = r.nami2_min == r.nami2_max == n1
    while n1 != 0 and n2 == n1 and not only_clash:
        n2 = int(rng.integers(r.nami2_min, r.nami2_max + 1))
    return n1, n2


def visualatom_shape(class_params: dict, rng: np.random.Generator, r: VisualAtomRanges) -> ContourShape:
    fields = {k: class_params[k] for k in ("vertices", "lines", "perlin", "line_width", "radius",
                                           "oval_x", "oval_y")}
    waves = (class_params["nami1"], class_params["nami2"])
    return ContourShape(**fields, waves=waves, **_center(rng, r.start_pos))


def visualatom_image(class_params: dict, rng: np.random.Generator, size: int,
                     r: VisualAtomRanges) -> np.ndarray:
    """One VisualAtom image: gray wavy contours on black."""
    shape = visualatom_shape(class_params, rng, r)
    return render_contour(shape, rng, size, rcdb_noise=False, background=0)
