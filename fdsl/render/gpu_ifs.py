"""Batched iterated function systems in torch: FractalDB, 1p-frac and 2D-OFDB (2D); ExFractalDB,
MV-FractalDB and 3D-OFDB (3D). The formulas are those of ``ifs2d`` and ``ifs3d``.

The CPU renderers run ONE chain of 100,000+ points. Many short chains are no substitute: systems with a
near-isometric map (1p-frac's sigma-factor systems, many FractalDB categories) mix slowly, and short chains
from the origin never reach the stationary distribution. So every image runs a few LONG chains, one per
``chain_length`` points (a smaller image runs one chain, as on the CPU), each after a ``burn_in`` that is not
drawn, and each chain is computed in parallel pieces: cut into chunks of ~sqrt(steps) maps, every chunk's
running affine composite is built step by step for all chunks at once, then the chunks are joined by carrying
the state from one chunk's end to the next one's start: ~2 sqrt(steps) small sequential steps instead of
``steps``. Chain 0 has no burn-in and starts at the origin like the CPU chain, so the transient points the CPU
image shows (which widen its min-max box) are there too.

A system is a padded tensor ``(B, N, P + 1)``: per map the row-major linear part and the shift
(2D: ``a, b, c, d, e, f``; 3D: 9 + 3 values) and the selection probability; ``num_maps`` (B,) says how
many rows of each sample are real.
"""
from __future__ import annotations

import math

import torch

from fdsl.render import ifs2d, ifs3d
from fdsl.render.gpu import canvas_index, constant, latest_keys, to_device

CHAIN_LENGTH = 10_000
BURN_IN = 256


# -- the chaos game ------------------------------------------------------------------------------
def chaos_game(systems: torch.Tensor, num_maps: torch.Tensor, points: int, generator: torch.Generator,
               dims: int, chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN, record_origin: bool = False,
               normalise_probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``points`` states per system: (B, M, dims) and their validity (B, M), chain after chain.

    Maps are chosen with the probabilities of the last column, cumulated as saved (a CSV whose p do not sum
    to 1 picks the last real map for the rest, as the CPU loop does) unless ``normalise_probabilities``.
    A chain that ever leaves the finite floats is invalid as a whole (the CPU drops the tail of its one chain).
    """
    batch = systems.shape[0]
    device, dtype = systems.device, systems.dtype
    chains = max(1, round(points / chain_length))
    burn_in = min(burn_in, points) if chains > 1 else 0
    steps = burn_in + math.ceil(max(points - burn_in, 1) / chains)
    chunk = math.ceil(math.sqrt(steps))
    chunks = math.ceil(steps / chunk)
    choice = _choose_maps(systems, num_maps, (chains, chunks, chunk), generator, normalise_probabilities)

    # running composite (linear, shift) of every chunk, after each of its steps
    coefficients = systems[..., :-1]
    lanes = (batch, chains, chunks)
    linear = torch.eye(dims, dtype=dtype, device=device).expand(*lanes, dims, dims)
    shift = torch.zeros(*lanes, dims, dtype=dtype, device=device)
    local_linear = torch.empty(*lanes, chunk, dims, dims, dtype=dtype, device=device)
    local_shift = torch.empty(*lanes, chunk, dims, dtype=dtype, device=device)
    for step in range(chunk):
        index = choice[..., step].reshape(batch, -1, 1).expand(-1, -1, coefficients.shape[-1])
        picked = torch.gather(coefficients, 1, index).view(*lanes, -1)
        map_linear = picked[..., : dims * dims].view(*lanes, dims, dims)
        linear = _matmul(map_linear, linear)
        shift = _matvec(map_linear, shift) + picked[..., dims * dims:]
        local_linear[:, :, :, step] = linear
        local_shift[:, :, :, step] = shift

    # carry the state from chunk to chunk, then place every step
    state = torch.zeros(batch, chains, dims, dtype=dtype, device=device)
    starts = torch.empty(*lanes, dims, dtype=dtype, device=device)
    for c in range(chunks):
        starts[:, :, c] = state
        state = _matvec(local_linear[:, :, c, -1], state) + local_shift[:, :, c, -1]
    states = _matvec(local_linear, starts[:, :, :, None]) + local_shift  # (B, chains, chunks, chunk, dims)
    states = states.view(batch, chains, chunks * chunk, dims)

    step_index = torch.arange(chunks * chunk, device=device)
    recorded = (step_index[None] >= burn_in) | (torch.arange(chains, device=device) == 0)[:, None]
    recorded &= (step_index < steps)[None]
    finite = torch.where(recorded[None, ..., None], states, 0).isfinite().all(-1).all(-1)  # (B, chains)
    valid = recorded[None] & finite[..., None]
    states, valid = states.reshape(batch, -1, dims), valid.reshape(batch, -1)
    if record_origin:  # the CPU's first point is the origin itself
        states = torch.cat([torch.zeros(batch, 1, dims, dtype=dtype, device=device), states], 1)
        valid = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=device), valid], 1)
    return states, valid


def _choose_maps(systems, num_maps, shape, generator, normalise):
    """Map indices (B, *shape) drawn with the systems' probabilities."""
    batch = systems.shape[0]
    cumulative = systems[..., -1].clamp(min=0).cumsum(1)
    if normalise:
        cumulative = cumulative / cumulative[:, -1:].clamp(min=1e-30)
    uniforms = torch.rand(batch, math.prod(shape), generator=generator, device=systems.device, dtype=systems.dtype)
    choice = torch.searchsorted(cumulative.contiguous(), uniforms)
    last = (to_device(num_maps, systems.device) - 1).clamp(min=0)[:, None]
    return torch.minimum(choice, last).view(batch, *shape)


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched products of small matrices as broadcast multiply-adds (faster than bmm at 2x2 / 3x3)."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def _matvec(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (a * v[..., None, :]).sum(-1)


# -- 2D: rescale, rasterise, flip ------------------------------------------------------------------
def to_pixels(points: torch.Tensor, valid: torch.Tensor, size: int, pad: int = ifs2d.PAD):
    """Per image, min-max rescale each axis of the valid points into [pad, size - pad] (as ifs2d.to_pixels):
    integer (xs, ys) and the validity, which drops points that did not land on a finite pixel."""
    keep = valid[..., None]
    low = torch.where(keep, points, math.inf).amin(1, keepdim=True)
    high = torch.where(keep, points, -math.inf).amax(1, keepdim=True)
    span = torch.where(high > low, high - low, torch.ones_like(high))
    low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    scaled = (points - low) / span * (size - 2 * pad) + pad
    valid = valid & torch.isfinite(scaled).all(-1)
    pixels = torch.where(valid[..., None], scaled, torch.zeros_like(scaled)).to(torch.long)  # int(): truncation
    return pixels[..., 0], pixels[..., 1], valid


def draw_2d(xs: torch.Tensor, ys: torch.Tensor, valid: torch.Tensor, size: int, draw_type: str,
            generator: torch.Generator | None = None, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Rasterise (B, M) pixel coordinates (y up, drawing order = index order) like ``ifs2d.draw``:
    uint8 (B, 1, size, size) for ``*_gray``, (B, 3, size, size) for ``*_color``. ``patch_*`` stamps a 3x3
    block from a 9-bit mask in 1..511 per point (``masks``, else drawn from ``generator``) that REPLACES
    what earlier points drew there."""
    if draw_type not in ifs2d.DRAW_TYPES:
        raise ValueError(f"draw type {draw_type!r} is not one of {ifs2d.DRAW_TYPES}")
    shape, color = draw_type.split("_")
    batch, count = xs.shape
    device = xs.device
    image_of = torch.arange(batch, device=device)[:, None].expand(batch, count)
    order = torch.arange(count, device=device).expand(batch, count)
    if shape == "point":
        index = canvas_index(image_of, ys, xs, size, batch, valid)
        winner = latest_keys(batch * size * size, index.reshape(-1), order.reshape(-1)).view(batch, size, size)
        lit, point = winner >= 0, winner
    else:
        if masks is None:
            masks = torch.randint(1, 512, (batch, count), generator=generator, device=device)
        # One write per point at its anchor (x + 1, y + 1); the stamp's 9 cells are resolved afterwards.
        index = canvas_index(image_of, ys + 1, xs + 1, size, batch, valid)
        keys = order * 512 + masks
        if count * 512 < 2**31:  # half the memory traffic of int64 keys
            keys = keys.to(torch.int32)
        anchors = latest_keys(batch * size * size, index.reshape(-1), keys.reshape(-1)).view(batch, size, size)
        lit, point = _resolve_stamps(anchors, size)
    if color == "gray":
        image = torch.where(lit, ifs2d.GRAY, 0).to(torch.uint8)[:, None]
    else:
        palette = constant("palette", ifs2d._palette(True), device, torch.uint8)
        image = torch.where(lit[..., None], palette[point.clamp(min=0) % len(palette)], 0).to(torch.uint8)
        image = image.permute(0, 3, 1, 2)
    return image.flip(-2).contiguous()  # y up: row = size - 1 - y


def _resolve_stamps(anchors: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell (y, x) is covered by the stamps anchored at (y - dr, x - dc), dr, dc in 0..2; the LAST point among
    them (largest key) decides, with bit 8 - 3 dr - dc of its mask. Returns (cell on, that point's order)."""
    batch = anchors.shape[0]
    padded = anchors.new_full((batch, size + 2, size + 2), -1)
    padded[:, 2:, 2:] = anchors
    best = anchors.new_full((batch, size, size), -1)
    bit = torch.zeros_like(best)
    for dr in range(3):
        for dc in range(3):
            key = padded[:, 2 - dr: 2 - dr + size, 2 - dc: 2 - dc + size]
            newer = key > best
            best = torch.where(newer, key, best)
            bit = torch.where(newer, (key >> (8 - 3 * dr - dc)) & 1, bit)  # the mask is the low 9 bits
    return (best >= 0) & (bit == 1), best >> 9


def flip(images: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """The 4 published flips per sample: bit 1 top-bottom, bit 2 left-right (as ifs2d.flip)."""
    kinds = to_device(kinds, images.device)[:, None, None, None]
    images = torch.where((kinds & 1) == 1, images.flip(-2), images)
    return torch.where((kinds & 2) == 2, images.flip(-1), images)


def render_ifs2d(systems: torch.Tensor, num_maps: torch.Tensor, flips: torch.Tensor, size: int, points: int,
                 generator: torch.Generator, draw_type: str = "patch_gray", pad: int = ifs2d.PAD,
                 chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN) -> torch.Tensor:
    """A batch of 2D IFS images: systems (B, N, 7) rows ``a, b, c, d, e, f, p``; uint8 (B, C, size, size)."""
    cloud, valid = chaos_game(systems, num_maps, points, generator, dims=2, chain_length=chain_length,
                              burn_in=burn_in, record_origin=True)
    xs, ys, valid = to_pixels(cloud, valid, size, pad)
    return flip(draw_2d(xs, ys, valid, size, draw_type, generator), flips)


# -- 3D: normalise, view, splat --------------------------------------------------------------------
def normalise_clouds(points: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Jointly min-max each cloud into [-1, 1] and centre it on its centroid (as ifs3d.normalise); a cloud
    with no finite extent loses all its points."""
    keep = valid[..., None]
    low = torch.where(keep, points, math.inf).amin((1, 2))
    high = torch.where(keep, points, -math.inf).amax((1, 2))
    span = high - low
    usable = torch.isfinite(span) & (span > 1e-12)
    span = torch.where(usable, span, torch.ones_like(span))
    low = torch.where(usable, low, torch.zeros_like(low))
    scaled = (points - low[:, None, None]) * (2.0 / span[:, None, None]) - 1.0
    scaled = torch.where(keep, scaled, torch.zeros_like(scaled))
    centroid = scaled.sum(1) / valid.sum(1).clamp(min=1)[:, None]
    return scaled - centroid[:, None], valid & usable[:, None]


def eye_position(azimuth: torch.Tensor, elevation: torch.Tensor,
                 distance: float = ifs3d.CAMERA_DISTANCE) -> torch.Tensor:
    """(B, 3) camera positions on a sphere around the origin; y is the vertical axis (as ifs3d.eye_position)."""
    return distance * torch.stack([torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation),
                                   torch.cos(elevation) * torch.cos(azimuth)], dim=-1)


def random_views(count: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """ExFractalDB / 3D-OFDB: viewpoints uniform on the sphere (as ifs3d.random_view)."""
    u = torch.rand(count, 2, generator=generator, device=generator.device, dtype=dtype)
    return eye_position(u[:, 0] * 2 * math.pi, torch.asin(u[:, 1] * 2 - 1))


def fixed_views(k: torch.Tensor, views: int, generator: torch.Generator, elevation_deg: float = 30.0,
                jitter_deg: float = 3.0, dtype=torch.float32) -> torch.Tensor:
    """MV-FractalDB: view k of ``views`` around the vertical axis, with jitter (as ifs3d.fixed_view)."""
    jitter = torch.deg2rad((torch.rand(len(k), 2, generator=generator, device=generator.device, dtype=dtype)
                            * 2 - 1) * jitter_deg)
    azimuth = 2 * math.pi * to_device(k, jitter.device, dtype) / views + jitter[:, 0]
    return eye_position(azimuth, math.radians(elevation_deg) + jitter[:, 1])


def look_at(eyes: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) world-to-camera rotations (rows right, up, backward) looking at the origin (as ifs3d.look_at)."""
    backward = eyes / eyes.norm(dim=-1, keepdim=True)
    up, down_z = torch.zeros_like(eyes), torch.zeros_like(eyes)
    up[:, 1], down_z[:, 2] = 1.0, -1.0
    polar = (backward[:, 1].abs() > 0.999)[:, None]
    up = torch.where(polar, down_z, up)
    right = torch.linalg.cross(up, backward)
    right = right / right.norm(dim=-1, keepdim=True)
    return torch.stack([right, torch.linalg.cross(backward, right), backward], dim=1)


def splat(points: torch.Tensor, valid: torch.Tensor, eyes: torch.Tensor, size: int,
          fov_degrees: float = ifs3d.FOV_DEGREES) -> torch.Tensor:
    """uint8 (B, 1, size, size): every valid point seen by the perspective camera at its sample's eye as one
    white pixel on black (near 1, far 100, y up; as ifs3d.render_view)."""
    batch, count, _ = points.shape
    eyes = to_device(eyes, points.device, points.dtype)
    camera = torch.einsum("bij,bmj->bmi", look_at(eyes), points - eyes[:, None])
    depth = -camera[..., 2]
    seen = valid & (depth >= ifs3d.NEAR) & (depth <= ifs3d.FAR)
    depth = torch.where(seen, depth, torch.ones_like(depth))
    half = size / 2.0
    focal = 1.0 / math.tan(math.radians(fov_degrees) / 2.0)
    col = torch.floor(half + half * focal * camera[..., 0] / depth)
    row = torch.floor(half - half * focal * camera[..., 1] / depth)
    seen &= torch.isfinite(col) & torch.isfinite(row)
    col = torch.where(seen, col, torch.zeros_like(col)).to(torch.long)
    row = torch.where(seen, row, torch.zeros_like(row)).to(torch.long)
    image_of = torch.arange(batch, device=points.device)[:, None].expand(batch, count)
    index = canvas_index(image_of, row, col, size, batch, seen)
    canvas = torch.zeros(batch * size * size + 1, dtype=torch.uint8, device=points.device)
    canvas[index.reshape(-1)] = 255  # every write is the same value: no ordering question
    return canvas[:-1].view(batch, 1, size, size)


def render_ifs3d(systems: torch.Tensor, num_maps: torch.Tensor, eyes: torch.Tensor, size: int, points: int,
                 generator: torch.Generator, chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN) -> torch.Tensor:
    """A batch of 3D IFS views: systems (B, N, 13) (3x3 linear part, shift, p); uint8 (B, 1, size, size)."""
    cloud, valid = chaos_game(systems, num_maps, points, generator, dims=3, chain_length=chain_length,
                              burn_in=burn_in, normalise_probabilities=True)
    cloud, valid = normalise_clouds(cloud, valid)
    return splat(cloud, valid, eyes, size)
