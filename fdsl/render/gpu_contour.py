"""Batched radial contours in torch: RCDB and VisualAtom (the formulas of ``contour``).

All the contours of a batch are one ragged set of vertices, ordered (image, vertex, line) so that the
outward walk of every vertex is one cumulative sum. Each polygon edge becomes the pixels of an 8-connected
line (as ``cv2.polylines`` draws, clipped to the canvas); a later contour line overwrites an earlier one
(see ``gpu.latest_keys``). Lengths are in pixels of the published 512-px canvas, scaled by ``size / 512``.

A batch of shapes is a dict of (B,) tensors with the fields of ``contour.ContourShape`` (``vertices``,
``lines``, ``perlin``, ``line_width``, ``radius``, ``oval_x``, ``oval_y``, ``center_x``, ``center_y``) plus
``wave_1``, ``wave_2`` (VisualAtom frequencies; 0 for none). ``vertices`` and ``lines`` decide tensor sizes:
pass them as CPU tensors to spare a device synchronisation.
"""
from __future__ import annotations

import math

import torch

from fdsl.render import contour
from fdsl.render.gpu import canvas_index, constant, latest_keys, to_device

FIELDS = ("vertices", "lines", "perlin", "line_width", "radius", "oval_x", "oval_y", "center_x", "center_y",
          "wave_1", "wave_2")


def perlin1d(x: torch.Tensor) -> torch.Tensor:
    """The CPU renderers' one-octave gradient noise (``contour.perlin1d``), on tensors."""
    gradients = constant("perlin gradients", contour.GRADIENTS, x.device, x.dtype)
    floor = torch.floor(x)
    cell = floor.to(torch.long) & 255
    t = x - floor
    fade = t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
    left = gradients[cell] * t
    right = gradients[cell + 1] * (t - 1.0)
    return (left + fade * (right - left)) * 0.4


def render_contours(shapes: dict, size: int, generator: torch.Generator, rcdb_noise: bool,
                    background: int) -> torch.Tensor:
    """uint8 (B, 1, size, size): each image's contours, 1 px wide, in their gray levels on ``background``."""
    device = generator.device
    vertices = shapes["vertices"].to("cpu", torch.long)
    lines = shapes["lines"].to("cpu", torch.long)
    batch = len(vertices)
    grays = _gray_levels(lines, rcdb_noise, generator)
    image_of, vertex, line, first = _ragged_vertices(vertices, lines, device)
    x, y = _vertex_positions(shapes, image_of, vertex, line, first, generator, rcdb_noise, size)
    nxt = _next_vertex(to_device(vertices, device), to_device(lines, device), image_of, vertex)
    line_offsets = to_device(torch.cumsum(lines, 0) - lines, device)
    keys = line * 256 + grays[line_offsets[image_of] + line]  # later lines win; the gray rides along
    return _draw_segments(x, y, x[nxt], y[nxt], image_of, keys, batch, size, background)


def _gray_levels(lines: torch.Tensor, rcdb_noise: bool, generator: torch.Generator) -> torch.Tensor:
    """One gray per contour line: RCDB U{0..256} clipped to 255, VisualAtom U{0..255} (as contour_vertices)."""
    high = 257 if rcdb_noise else 256
    return torch.randint(0, high, (int(lines.sum()),), generator=generator, device=generator.device).clamp(max=255)


def _ragged_vertices(vertices: torch.Tensor, lines: torch.Tensor, device):
    """For every (image, vertex, line), in that order: image index, vertex k, line l, and the flat index of
    (image, k, line 0). Sizes come from the CPU tensors, so nothing waits for the device."""
    per_image = vertices * lines
    total = int(per_image.sum())
    starts = to_device(torch.cumsum(per_image, 0) - per_image, device)
    image_of = torch.repeat_interleave(torch.arange(len(vertices), device=device), to_device(per_image, device),
                                       output_size=total)
    local = torch.arange(total, device=device) - starts[image_of]
    line_count = to_device(lines, device)[image_of]
    vertex, line = local // line_count, local % line_count
    return image_of, vertex, line, starts[image_of] + vertex * line_count


def _vertex_positions(shapes, image_of, vertex, line, first, generator, rcdb_noise, size):
    """Vertex (k, l) sits at the ellipse point k, moved outward along angle theta_k by the running sum over
    lines 0..l of (noise - w); RCDB noise is ``perlin * 2P - P``, VisualAtom's ``perlin * P - P - wave``."""
    device = generator.device
    per = {name: to_device(shapes[name], device, torch.float32)[image_of] for name in FIELDS if name != "lines"}
    theta = 2.0 * math.pi * vertex.to(torch.float32) / per["vertices"]
    cos, sin = torch.cos(theta), torch.sin(theta)
    wave = 0.5 * torch.sin(theta * per["wave_1"]) + 0.5 * torch.sin(theta * per["wave_2"])
    scale = per["perlin"] * (2.0 if rcdb_noise else 1.0)
    noise = perlin1d(torch.rand(len(vertex), 2, generator=generator, device=device) * contour.NOISE_SPAN)
    noise = noise * scale[:, None] - (per["perlin"] + wave)[:, None]
    step = noise - per["line_width"][:, None]
    walked = _segmented_cumsum(step, first)
    pix = size / contour.REFERENCE_SIZE
    x = per["center_x"] + per["radius"] * per["oval_x"] * cos - cos * walked[:, 0]
    y = per["center_y"] + per["radius"] * per["oval_y"] * sin - sin * walked[:, 1]
    return _to_int(x * pix), _to_int(y * pix)


def _segmented_cumsum(values: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Cumulative sum that restarts at every index ``first`` points to. It is one running sum over the whole
    batch, so it is taken in float64 (float32 would lose the small steps against a sum of millions)."""
    values = values.to(torch.float64)
    total = torch.cumsum(values, 0)
    return (total - (total[first] - values[first])).to(torch.float32)


def _to_int(v: torch.Tensor) -> torch.Tensor:
    return v.clamp(-1e6, 1e6).trunc().to(torch.long)  # the CPU renderer's int32 conversion


def _next_vertex(vertices, lines, image_of, vertex):
    """Flat index of vertex k + 1 of the same line (the polygon is closed: the last joins the first)."""
    index = torch.arange(len(vertex), device=vertex.device)
    count, per_vertex = vertices[image_of], lines[image_of]
    return torch.where(vertex < count - 1, index + per_vertex, index - (count - 1) * per_vertex)


def _draw_segments(x0, y0, x1, y1, image_of, keys, batch, size, background) -> torch.Tensor:
    """Rasterise every segment as the pixels p0 + round(d * j / n), j = 0..n - 1, n = max(|dx|, |dy|) (the next
    segment draws the end point), clipped to the canvas before expansion so that off-canvas parts cost nothing."""
    dx, dy = x1 - x0, y1 - y0
    n = torch.maximum(dx.abs(), dy.abs())
    first, last = _clip_steps(x0, y0, dx, dy, n, size)
    counts = (last - first + 1).clamp(min=0)
    offsets = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())  # the one device synchronisation of a batch: the pixel count
    segment = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts, output_size=total)
    j = torch.arange(total, device=counts.device) - offsets[segment] + first[segment]
    twice_steps = 2 * n[segment].clamp(min=1)
    # round(d * j / n) = floor((2 d j + n) / 2n), in exact integers
    col = x0[segment] + torch.div(2 * dx[segment] * j + twice_steps // 2, twice_steps, rounding_mode="floor")
    row = y0[segment] + torch.div(2 * dy[segment] * j + twice_steps // 2, twice_steps, rounding_mode="floor")
    index = canvas_index(image_of[segment], row, col, size, batch)
    canvas = latest_keys(batch * size * size, index, keys[segment].to(torch.int32)).view(batch, 1, size, size)
    return torch.where(canvas >= 0, canvas & 255, background).to(torch.uint8)


def _clip_steps(x0, y0, dx, dy, n, size):
    """The range of steps j in [0, max(n - 1, 0)] whose pixel can land on the canvas (Liang-Barsky on the
    segment against [-0.5, size - 0.5] on both axes); first > last when none can."""
    low, high = torch.zeros_like(dx, dtype=torch.float64), torch.ones_like(dx, dtype=torch.float64)
    for start, delta in ((x0, dx), (y0, dy)):
        start, delta = start.to(torch.float64), delta.to(torch.float64)
        moving = delta != 0
        safe = torch.where(moving, delta, torch.ones_like(delta))
        a, b = (-0.5 - start) / safe, (size - 0.5 - start) / safe
        inside = (start >= -0.5) & (start < size - 0.5)
        low = torch.where(moving, torch.maximum(low, torch.minimum(a, b)), torch.where(inside, low, 2.0))
        high = torch.where(moving, torch.minimum(high, torch.maximum(a, b)), high)
    steps = n.to(torch.float64)
    first = torch.ceil(low * steps - 1e-9).clamp(min=0).to(torch.long)
    last = torch.minimum(torch.floor(high * steps + 1e-9).to(torch.long), (n - 1).clamp(min=0))
    return first, torch.where(low <= high, last, first - 1)


# -- per-instance geometry (the CPU renderers redraw these from the instance's stream) -----------------
def rcdb_geometry(count: int, generator: torch.Generator, ranges: contour.RCDBRanges) -> dict:
    """RCDB instance: radius U{min..max}, oval rates U(1, rate), centre (512 + U{-s..s}) / 2."""
    device = generator.device
    rates = 1.0 + torch.rand(count, 2, generator=generator, device=device, dtype=torch.float64) * (ranges.oval_rate - 1)
    return {"radius": torch.randint(ranges.radius_min, ranges.radius_max + 1, (count,), generator=generator,
                                    device=device).to(torch.float64),
            "oval_x": rates[:, 0], "oval_y": rates[:, 1], **centers(count, generator, ranges.start_pos)}


def centers(count: int, generator: torch.Generator, start_pos: int) -> dict:
    """Contour centres (512 + U{-start_pos..start_pos}) / 2 on each axis (512-px units)."""
    offsets = torch.randint(-start_pos, start_pos + 1, (count, 2), generator=generator, device=generator.device)
    center = (contour.REFERENCE_SIZE + offsets.to(torch.float64)) / 2
    return {"center_x": center[:, 0], "center_y": center[:, 1]}
