"""Batched radial contours in torch: RCDB and VisualAtom (the formulas of ``contour``).

All the contours of a batch are one ragged set of vertices, ordered (image, vertex, line) so that the
outward walk of every vertex is one running sum over its lines. Each polygon edge becomes the pixels of an
8-connected line (as ``cv2.polylines`` draws, clipped to the canvas); a later contour line overwrites an
earlier one (see ``gpu.latest_keys``). Lengths are in pixels of the published 512-px canvas, scaled by
``size / 512``. Everything is float32 (as the CPU renderer).

The host never waits for the device. The vertex and line counts are host numbers, so the images are cut
into chunks of at most ``vertex_budget`` vertices and ``pixel_budget`` pixel slots (this bounds the memory
of a batch), every chunk padded to a size of a few fixed steps (so that a compiled ``draw_chunk`` is reused).
A chunk's pixel slots are sized from the host numbers too: per contour line of V vertices,
min(V (size + 1), max(V R, 4 size)) with R pixels per vertex (``PIXELS_PER_VERTEX`` at 512 px: 1.4 (RCDB)
and 1.9 (VisualAtom) times the measured mean); when a chunk's pixels outnumber its slots (not met in the
measured batches) its lines are thinned evenly rather than cut, and ``ContourRenderer.thinned`` counts it.

A batch of shapes is a dict of (B,) tensors with the fields of ``contour.ContourShape`` (``vertices``,
``lines``, ``perlin``, ``line_width``, ``radius``, ``oval_x``, ``oval_y``, ``center_x``, ``center_y``) plus
``wave_1``, ``wave_2`` (VisualAtom frequencies; 0 for none). ``vertices`` and ``lines`` decide tensor sizes:
pass them as CPU tensors (a device tensor is read back once).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from fdsl.render import contour
from fdsl.render.gpu import canvas_index, constant, to_device

FIELDS = ("vertices", "lines", "perlin", "line_width", "radius", "oval_x", "oval_y", "center_x", "center_y",
          "wave_1", "wave_2")
VERTEX_BUDGET = 1 << 23  # vertices of one chunk (about 2 GB of temporaries)
PIXEL_BUDGET = 1 << 25  # pixel slots of one chunk (about 2 GB of temporaries)
PIXELS_PER_VERTEX = {True: 32.0, False: 6.0}  # at 512 px; measured means 23 (RCDB), 3.2 (VisualAtom)
def perlin1d(x: torch.Tensor, gradients: torch.Tensor | None = None) -> torch.Tensor:
    """The CPU renderers' one-octave gradient noise (``contour.perlin1d``), on tensors."""
    if gradients is None:
        gradients = perlin_table(x.device, x.dtype)
    floor = torch.floor(x)
    cell = floor.to(torch.long) & 255
    t = x - floor
    fade = t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
    left = gradients[cell] * t
    right = gradients[cell + 1] * (t - 1.0)
    return (left + fade * (right - left)) * 0.4


def perlin_table(device, dtype=torch.float32) -> torch.Tensor:
    return constant("perlin gradients", contour.GRADIENTS, device, dtype)


def _padded(count: int) -> int:
    """``count`` rounded up to one of 8 steps per power of two (few distinct shapes, at most 1/8 more)."""
    step = 1 << max(0, count.bit_length() - 4)
    return max(16, -(-count // step) * step)


class ContourRenderer:
    """RCDB (``rcdb_noise``) or VisualAtom batches of one size: ``renderer(shapes, generator)`` -> uint8
    (B, 1, size, size), 1-px contours in their gray levels on ``background``."""

    def __init__(self, device, size: int, rcdb_noise: bool, background: int, vertex_budget: int = VERTEX_BUDGET,
                 pixel_budget: int = PIXEL_BUDGET):
        self.device = torch.device(device)
        self.size, self.rcdb_noise, self.background = int(size), bool(rcdb_noise), int(background)
        self.vertex_budget, self.pixel_budget = int(vertex_budget), int(pixel_budget)
        self.pixels_per_vertex = PIXELS_PER_VERTEX[self.rcdb_noise] * self.size / contour.REFERENCE_SIZE
        self.gradients = perlin_table(self.device)
        self.thinned = torch.zeros((), dtype=torch.long, device=self.device)  # chunks drawn with too few slots

    # -- host side: the chunks of a batch ------------------------------------------------------------------
    def slots(self, vertices: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Pixel slots per image: per contour line min(V (size + 1), max(V R, 4 size))."""
        per_line = np.minimum(vertices * (self.size + 1),
                              np.maximum(np.ceil(vertices * self.pixels_per_vertex), 4 * self.size))
        return (lines * per_line).astype(np.int64)

    def chunks(self, vertices: np.ndarray, lines: np.ndarray) -> list[tuple[int, int]]:
        """Consecutive image ranges [start, end) within the vertex and pixel budgets (at least one image)."""
        work, slots = vertices * lines, self.slots(vertices, lines)
        ranges, start, used_work, used_slots = [], 0, 0, 0
        for i in range(len(vertices)):
            if i > start and (used_work + work[i] > self.vertex_budget or used_slots + slots[i] > self.pixel_budget):
                ranges.append((start, i))
                start, used_work, used_slots = i, 0, 0
            used_work += int(work[i])
            used_slots += int(slots[i])
        return ranges + [(start, len(vertices))]

    # -- a batch ------------------------------------------------------------------------------------------------
    def __call__(self, shapes: dict, generator: torch.Generator) -> torch.Tensor:
        v = np.asarray(shapes["vertices"].cpu(), dtype=np.int64)  # host numbers: no tensor op reads them
        l = np.asarray(shapes["lines"].cpu(), dtype=np.int64)
        batch = len(v)
        table = self.image_table(shapes, v, l)
        high = 257 if self.rcdb_noise else 256  # RCDB U{0..256} clipped to 255, VisualAtom U{0..255}
        grays = torch.randint(0, high, (int(l.sum()),), generator=generator, device=self.device,
                              dtype=torch.int32).clamp(max=255)
        canvas = torch.full((batch * self.size * self.size + 1,), -1, dtype=torch.int32, device=self.device)
        passes = max(1, math.ceil(math.log2(max(int(l.max()), 1)))) if batch else 1
        for start, end in self.chunks(v, l):
            counts = v[start:end] * l[start:end]
            padded = _padded(int(counts.sum()))
            slots = _padded(int(self.slots(v[start:end], l[start:end]).sum()))
            runs = to_device(torch.as_tensor(np.append(counts, padded - counts.sum())), self.device)
            images = torch.arange(start, end + 1)
            images[-1] = batch  # the padding belongs to a dummy image that draws nothing
            images = to_device(images, self.device)
            uniforms = torch.rand(padded, 2, generator=generator, device=self.device)
            total = self.draw_chunk(canvas, table, grays, images, runs, uniforms, padded, slots, passes)
            self.thinned += total > slots
        image = canvas[:-1].view(batch, 1, self.size, self.size)
        return torch.where(image >= 0, image & 255, self.background).to(torch.uint8)

    def image_table(self, shapes: dict, vertices: np.ndarray, lines: np.ndarray) -> dict:
        """Per-image float32 fields on the device, plus a last dummy image (1 vertex, 1 line) for padding."""
        host = {"vertices": np.append(vertices, 1).astype(np.float32), "lines": np.append(lines, 1).astype(np.float32),
                "line_start": np.append(np.cumsum(lines) - lines, 0)}
        table = {name: to_device(torch.from_numpy(values), self.device) for name, values in host.items()}
        for name in FIELDS[2:]:
            column = to_device(torch.as_tensor(shapes[name]), self.device, torch.float32)
            table[name] = torch.cat([column, column.new_zeros(1)])
        return table

    def draw_chunk(self, canvas: torch.Tensor, table: dict, grays: torch.Tensor, images: torch.Tensor,
                   runs: torch.Tensor, uniforms: torch.Tensor, padded: int, slots: int, passes: int) -> torch.Tensor:
        """Draw the vertices of ``images`` (``runs`` vertices each, the last entry the padding) into ``canvas``
        (flat int32 keys, in place). Returns the chunk's pixel count (a device scalar). Compiles whole."""
        image_of = torch.repeat_interleave(images, runs, output_size=padded)
        starts = torch.cumsum(runs, 0) - runs
        position = torch.arange(padded, device=canvas.device)
        local = position - torch.repeat_interleave(starts, runs, output_size=padded)
        per = {name: column[image_of] for name, column in table.items()}
        line_count = per["lines"].to(torch.long)
        vertex, line = local // line_count, local % line_count
        x, y = self.vertex_positions(per, vertex, line, uniforms, passes)
        count = per["vertices"].to(torch.long)
        nxt = torch.where(vertex < count - 1, position + line_count, position - (count - 1) * line_count)
        keys = line.to(torch.int32) * 256 + grays[(per["line_start"] + line).clamp(max=len(grays) - 1)]
        drawn = image_of < canvas.numel() // (self.size * self.size)  # not the padding
        return _draw_segments(canvas, x, y, x[nxt], y[nxt], image_of, keys, drawn, self.size, slots)

    def vertex_positions(self, per: dict, vertex, line, uniforms, passes):
        """Vertex (k, l) sits at the ellipse point k, moved outward along angle theta_k by the running sum over
        lines 0..l of (noise - w); RCDB noise is ``perlin * 2P - P``, VisualAtom's ``perlin * P - P - wave``."""
        theta = 2.0 * math.pi * vertex.to(torch.float32) / per["vertices"]
        cos, sin = torch.cos(theta), torch.sin(theta)
        wave = 0.5 * torch.sin(theta * per["wave_1"]) + 0.5 * torch.sin(theta * per["wave_2"])
        scale = per["perlin"] * (2.0 if self.rcdb_noise else 1.0)
        noise = perlin1d(uniforms * contour.NOISE_SPAN, self.gradients)
        step = noise * scale[:, None] - (per["perlin"] + wave + per["line_width"])[:, None]
        walked = _running_sum_over_lines(step, line, passes)
        pix = self.size / contour.REFERENCE_SIZE
        x = per["center_x"] + per["radius"] * per["oval_x"] * cos - cos * walked[:, 0]
        y = per["center_y"] + per["radius"] * per["oval_y"] * sin - sin * walked[:, 1]
        return _to_int(x * pix), _to_int(y * pix)


@functools.lru_cache(maxsize=16)
def renderer(device: torch.device, size: int, rcdb_noise: bool, background: int) -> ContourRenderer:
    """The renderer of one configuration, made once (its constants go to the device then)."""
    return ContourRenderer(device, size, rcdb_noise, background)


def render_contours(shapes: dict, size: int, generator: torch.Generator, rcdb_noise: bool,
                    background: int) -> torch.Tensor:
    """uint8 (B, 1, size, size): each image's contours, 1 px wide, in their gray levels on ``background``."""
    return renderer(torch.device(generator.device), size, rcdb_noise, background)(shapes, generator)


def _running_sum_over_lines(values: torch.Tensor, line: torch.Tensor, passes: int) -> torch.Tensor:
    """Per vertex, the sum of ``values`` over its lines 0..l (entries of a vertex are consecutive, line l at
    offset l): a doubling scan of ``passes`` >= log2(lines) passes, in float32 (sums of at most 200 steps)."""
    for p in range(passes):
        offset = 1 << p
        earlier = torch.cat([values.new_zeros(offset, values.shape[1]), values[:-offset]])
        values = values + torch.where((line >= offset)[:, None], earlier, 0.0)
    return values


def _to_int(v: torch.Tensor) -> torch.Tensor:
    return v.clamp(-1e6, 1e6).trunc().to(torch.long)  # the CPU renderer's int32 conversion


def _draw_segments(canvas, x0, y0, x1, y1, image_of, keys, drawn, size, slots) -> torch.Tensor:
    """Rasterise every segment as the pixels p0 + round(d * j / n), j = 0..n - 1, n = max(|dx|, |dy|) (the next
    segment draws the end point), clipped to the canvas before expansion so that off-canvas parts cost nothing.
    Pixel slot t draws pixel t of the chunk (or, past ``slots`` pixels, pixel t * total / slots: even thinning),
    found by a binary search in the running pixel count: no size is read back from the device."""
    dx, dy = x1 - x0, y1 - y0
    n = torch.maximum(dx.abs(), dy.abs())
    first, last = _clip_steps(x0, y0, dx, dy, n, size)
    counts = torch.where(drawn, (last - first + 1).clamp(min=0), 0)
    ends = torch.cumsum(counts, 0)
    total = ends[-1]
    slot = torch.arange(slots, device=canvas.device)
    pixel = slot * torch.clamp(total, min=slots) // slots
    segment = torch.searchsorted(ends, pixel, right=True).clamp(max=len(ends) - 1)
    j = pixel - (ends[segment] - counts[segment]) + first[segment]
    twice_steps = 2 * n[segment].clamp(min=1)
    # round(d * j / n) = floor((2 d j + n) / 2n), in exact integers
    col = x0[segment] + torch.div(2 * dx[segment] * j + twice_steps // 2, twice_steps, rounding_mode="floor")
    row = y0[segment] + torch.div(2 * dy[segment] * j + twice_steps // 2, twice_steps, rounding_mode="floor")
    images = (canvas.numel() - 1) // (size * size)
    index = canvas_index(image_of[segment], row, col, size, images, pixel < total)
    canvas.scatter_reduce_(0, index, keys[segment], reduce="amax", include_self=True)
    return total


def _clip_steps(x0, y0, dx, dy, n, size):
    """The range of steps j in [0, max(n - 1, 0)] whose pixel can land on the canvas (Liang-Barsky on the
    segment against [-0.5, size - 0.5] on both axes, in float32, widened by one step on each side so that
    rounding never loses a pixel: the canvas test drops the extra ones); first > last when none can."""
    low, high = torch.zeros_like(dx, dtype=torch.float32), torch.ones_like(dx, dtype=torch.float32)
    for start, delta in ((x0, dx), (y0, dy)):
        start, delta = start.to(torch.float32), delta.to(torch.float32)
        moving = delta != 0
        safe = torch.where(moving, delta, torch.ones_like(delta))
        a, b = (-0.5 - start) / safe, (size - 0.5 - start) / safe
        inside = (start >= -0.5) & (start < size - 0.5)
        low = torch.where(moving, torch.maximum(low, torch.minimum(a, b)), torch.where(inside, low, 2.0))
        high = torch.where(moving, torch.minimum(high, torch.maximum(a, b)), high)
    steps = n.to(torch.float32)
    first = (torch.ceil(low * steps) - 1).clamp(min=0).to(torch.long)
    last = torch.minimum(torch.floor(high * steps).to(torch.long) + 1, (n - 1).clamp(min=0))
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
