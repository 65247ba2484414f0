"""Batched iterated function systems in torch: FractalDB, 1p-frac and 2D-OFDB (2D); ExFractalDB,
MV-FractalDB and 3D-OFDB (3D). The formulas are those of ``ifs2d`` and ``ifs3d``.

The CPU renderers run ONE chain of 100,000+ points. Many short chains are no substitute: systems with a
near-isometric map (1p-frac's sigma-factor systems, many FractalDB categories) mix slowly, and short chains
from the origin never reach the stationary distribution. So every image runs a few LONG chains, one per
``chain_length`` points (a smaller image runs one chain, as on the CPU), each after a ``burn_in`` that is not
drawn. A chain is computed as a parallel prefix (scan) of its affine maps, with a number of tensor ops that
does not grow with its length (only with its log): cut into chunks of ``CHUNK`` maps, each chunk's composite
comes from pairwise halving, the chunks' composites are joined by a doubling scan along the chain (each chunk's
start state), and then all chunks step from their start states at once, ``CHUNK`` steps. Chain 0 has no burn-in and starts at the origin
like the CPU chain, so the transient points the CPU image shows (which widen its min-max box) are there too.

A system is a padded tensor ``(B, N, P + 1)``: per map the row-major linear part and the shift
(2D: ``a, b, c, d, e, f``; 3D: 9 + 3 values) and the selection probability; ``num_maps`` (B,) says how
many rows of each sample are real.

Each family is a renderer object: its constructor puts every constant table on the device, ``draws`` takes
the batch's random numbers from a ``torch.Generator`` (eager, a few ops), and ``draw`` makes the images from
them with no generator, no host synchronisation and no Python value read from a tensor, so that
``torch.compile(renderer.draw, fullgraph=True)`` traces it whole. The module functions ``render_ifs2d`` and
``render_ifs3d`` keep the one-call form (a renderer per configuration, made on first use).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import torch

from fdsl.render import ifs2d, ifs3d
from fdsl.render.gpu import canvas_index, constant, latest_keys, to_device

CHAIN_LENGTH = 10_000
BURN_IN = 256
CHUNK = 16  # maps per chunk of a chain (a power of two): CHUNK steps of 1/CHUNK of the states each
TRAIL_DROP = 100  # a chain that leaves the finite floats loses this many points before it (ifs2d.to_pixels)


# -- the chaos game ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ChainLayout:
    """How ``points`` states are laid out: ``chains`` chains of ``steps`` maps (the first ``burn_in`` of each
    chain but chain 0 are not drawn), padded to ``chunks`` chunks of ``CHUNK`` maps."""

    chains: int
    burn_in: int
    steps: int
    chunks: int

    @classmethod
    def of(cls, points: int, chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN) -> ChainLayout:
        chains = max(1, round(points / chain_length))
        burn_in = min(burn_in, points) if chains > 1 else 0
        steps = burn_in + math.ceil(max(points - burn_in, 1) / chains)
        return cls(chains, burn_in, steps, math.ceil(steps / CHUNK))

    @property
    def slots(self) -> int:
        """States per system, padding included: (chains, chunks, CHUNK) flattened."""
        return self.chains * self.chunks * CHUNK


def chaos_game(systems: torch.Tensor, num_maps: torch.Tensor, uniforms: torch.Tensor, layout: ChainLayout,
               dims: int, record_origin: bool = False,
               normalise_probabilities: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """About ``points`` states per system: (B, M, dims) and their validity (B, M), chain after chain.
    ``uniforms`` (B, layout.slots) pick the maps.

    Maps are chosen with the probabilities of the last column, cumulated as saved (a CSV whose p do not sum
    to 1 picks the last real map for the rest, as the CPU loop does) unless ``normalise_probabilities``.
    A chain that leaves the finite floats keeps its states up to ``TRAIL_DROP`` before the first non-finite
    one, as the CPU keeps the head of its one chain.
    """
    batch = systems.shape[0]
    lanes = (batch, layout.chains, layout.chunks, CHUNK)
    choice = _choose_maps(systems, num_maps, uniforms, normalise_probabilities)
    picked = torch.gather(systems[..., :-1], 1, choice[..., None].expand(-1, -1, systems.shape[-1] - 1))
    linear = picked[..., : dims * dims].reshape(*lanes, dims, dims)
    shift = picked[..., dims * dims:].reshape(*lanes, dims)
    del choice, picked

    # the composite of every chunk, then of the chunks before each chunk: chains start at the origin, so a
    # chunk starts where the composite of the chunks before it sends the origin: its shift
    chunk_linear, chunk_shift = _composites(linear, shift)
    chunk_linear, chunk_shift = _inclusive_scan(chunk_linear, chunk_shift, dim=2)
    state = torch.cat([torch.zeros_like(chunk_shift[:, :, :1]), chunk_shift[:, :, :-1]], 2)
    del chunk_linear, chunk_shift
    states = []
    for k in range(CHUNK):  # every chunk at once, step by step (small temporaries: 1/CHUNK of the states)
        state = _matvec(linear[:, :, :, k], state) + shift[:, :, :, k]
        states.append(state)
    del linear, shift
    states = torch.stack(states, 3).reshape(batch, layout.chains, -1, dims)

    step = torch.arange(layout.chunks * CHUNK, device=systems.device)
    recorded = (step[None] >= layout.burn_in) | (torch.arange(layout.chains, device=systems.device) == 0)[:, None]
    recorded = recorded & (step < layout.steps)[None]
    broken = ~states.isfinite().all(-1) & (step < layout.steps)
    first_broken = torch.where(broken, step, layout.steps + TRAIL_DROP).amin(-1, keepdim=True)  # (B, chains, 1)
    valid = recorded[None] & (step < first_broken - TRAIL_DROP)
    states, valid = states.reshape(batch, -1, dims), valid.reshape(batch, -1)
    if record_origin:  # the CPU's first point is the origin itself
        states = torch.cat([states.new_zeros(batch, 1, dims), states], 1)
        valid = torch.cat([valid.new_ones(batch, 1), valid], 1)
    return states, valid


def _choose_maps(systems, num_maps, uniforms, normalise):
    """Map indices (B, M) drawn with the systems' probabilities from uniforms (B, M)."""
    cumulative = systems[..., -1].clamp(min=0).cumsum(1)
    if normalise:
        cumulative = cumulative / cumulative[:, -1:].clamp(min=1e-30)
    choice = torch.searchsorted(cumulative.contiguous(), uniforms.to(cumulative.dtype))
    return torch.minimum(choice, (num_maps - 1).clamp(min=0)[:, None])


def _composites(linear: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The composite of the CHUNK maps along dim -3 of ``linear`` (dim -2 of ``shift``), by pairwise halving."""
    while linear.shape[-3] > 1:
        pairs_linear = linear.unflatten(-3, (linear.shape[-3] // 2, 2))
        pairs_shift = shift.unflatten(-2, (shift.shape[-2] // 2, 2))
        later = pairs_linear[..., 1, :, :]
        shift = _matvec(later, pairs_shift[..., 0, :]) + pairs_shift[..., 1, :]
        linear = _matmul(later, pairs_linear[..., 0, :, :])
    return linear[..., 0, :, :], shift[..., 0, :]


def _inclusive_scan(linear: torch.Tensor, shift: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Running composites along ``dim`` (map k applied after maps 0..k-1) by doubling: after the pass with
    offset d every entry holds the composite of the up to 2d maps ending at it (Hillis-Steele)."""
    length = linear.shape[dim]
    offset = 1
    while offset < length:
        shift = _matvec(linear, _shifted(shift, offset, dim, identity=False)) + shift
        linear = _matmul(linear, _shifted(linear, offset, dim, identity=True))
        offset *= 2
    return linear, shift


def _shifted(x: torch.Tensor, offset: int, dim: int, identity: bool) -> torch.Tensor:
    """x moved ``offset`` places along ``dim``; the places left empty hold the identity map (or zero shift)."""
    head = x.narrow(dim, 0, x.shape[dim] - offset)
    pad_shape = list(x.shape)
    pad_shape[dim] = offset
    pad = x.new_zeros(pad_shape)
    if identity:
        pad = pad + torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.cat([pad, head], dim)


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
            generator: torch.Generator | None = None, masks: torch.Tensor | None = None,
            palette: torch.Tensor | None = None) -> torch.Tensor:
    """Rasterise (B, M) pixel coordinates (y up, drawing order = index order) like ``ifs2d.draw``:
    uint8 (B, 1, size, size) for ``*_gray``, (B, 3, size, size) for ``*_color`` (``palette``: the device copy
    of the published palette, else made here). ``patch_*`` stamps a 3x3 block from a 9-bit mask in 1..511
    per point (``masks``, else drawn from ``generator``) that REPLACES what earlier points drew there."""
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
        if palette is None:
            palette = palette_table(device)
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


def palette_table(device) -> torch.Tensor:
    return constant("palette", ifs2d._palette(True), device, torch.uint8)


def flip(images: torch.Tensor, kinds: torch.Tensor) -> torch.Tensor:
    """The 4 published flips per sample: bit 1 top-bottom, bit 2 left-right (as ifs2d.flip)."""
    kinds = to_device(kinds, images.device)[:, None, None, None]
    images = torch.where((kinds & 1) == 1, images.flip(-2), images)
    return torch.where((kinds & 2) == 2, images.flip(-1), images)


class IFS2DRenderer:
    """FractalDB / 1p-frac / 2D-OFDB batches of one configuration: ``renderer(systems (B, N, 7), num_maps,
    flips, generator)`` -> uint8 (B, C, size, size); systems rows are ``a, b, c, d, e, f, p``."""

    def __init__(self, device, size: int, points: int, draw_type: str = "patch_gray", pad: int = ifs2d.PAD,
                 chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN):
        if draw_type not in ifs2d.DRAW_TYPES:
            raise ValueError(f"draw type {draw_type!r} is not one of {ifs2d.DRAW_TYPES}")
        self.device = torch.device(device)
        self.size, self.pad, self.draw_type = int(size), int(pad), draw_type
        self.layout = ChainLayout.of(int(points), chain_length, burn_in)
        self.palette = palette_table(self.device) if draw_type.endswith("color") else None

    def draws(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's random numbers: map-selection uniforms and (patches) the 9-bit masks."""
        uniforms = torch.rand(batch, self.layout.slots, generator=generator, device=self.device)
        if not self.draw_type.startswith("patch"):
            return uniforms, None
        masks = torch.randint(1, 512, (batch, self.layout.slots + 1), generator=generator, device=self.device,
                              dtype=torch.int32)
        return uniforms, masks

    def draw(self, systems: torch.Tensor, num_maps: torch.Tensor, flips: torch.Tensor, uniforms: torch.Tensor,
             masks: torch.Tensor | None = None) -> torch.Tensor:
        """The images from the batch's random numbers (all tensors on the device; compiles whole)."""
        cloud, valid = chaos_game(systems, num_maps, uniforms, self.layout, dims=2, record_origin=True)
        xs, ys, valid = to_pixels(cloud, valid, self.size, self.pad)
        return flip(draw_2d(xs, ys, valid, self.size, self.draw_type, masks=masks, palette=self.palette), flips)

    def __call__(self, systems, num_maps, flips, generator: torch.Generator) -> torch.Tensor:
        device = systems.device
        return self.draw(systems, to_device(num_maps, device), to_device(flips, device),
                         *self.draws(len(systems), generator))


@functools.lru_cache(maxsize=64)
def renderer(kind: type, device: torch.device, *config):
    """The renderer of one configuration, made once (its constants go to the device then)."""
    return kind(device, *config)


def render_ifs2d(systems: torch.Tensor, num_maps: torch.Tensor, flips: torch.Tensor, size: int, points: int,
                 generator: torch.Generator, draw_type: str = "patch_gray", pad: int = ifs2d.PAD,
                 chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN) -> torch.Tensor:
    """A batch of 2D IFS images: systems (B, N, 7) rows ``a, b, c, d, e, f, p``; uint8 (B, C, size, size)."""
    make = renderer(IFS2DRenderer, systems.device, size, points, draw_type, pad, chain_length, burn_in)
    return make(systems, num_maps, flips, generator)


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


class IFS3DRenderer:
    """ExFractalDB / MV-FractalDB / 3D-OFDB views of one configuration: ``renderer(systems (B, N, 13),
    num_maps, eyes (B, 3), generator)`` -> uint8 (B, 1, size, size)."""

    def __init__(self, device, size: int, points: int, chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN):
        self.device = torch.device(device)
        self.size = int(size)
        self.layout = ChainLayout.of(int(points), chain_length, burn_in)

    def draws(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor]:
        return (torch.rand(batch, self.layout.slots, generator=generator, device=self.device),)

    def draw(self, systems: torch.Tensor, num_maps: torch.Tensor, eyes: torch.Tensor,
             uniforms: torch.Tensor) -> torch.Tensor:
        cloud, valid = chaos_game(systems, num_maps, uniforms, self.layout, dims=3, normalise_probabilities=True)
        cloud, valid = normalise_clouds(cloud, valid)
        return splat(cloud, valid, eyes, self.size)

    def __call__(self, systems, num_maps, eyes, generator: torch.Generator) -> torch.Tensor:
        device = systems.device
        return self.draw(systems, to_device(num_maps, device), to_device(eyes, device, systems.dtype),
                         *self.draws(len(systems), generator))


def render_ifs3d(systems: torch.Tensor, num_maps: torch.Tensor, eyes: torch.Tensor, size: int, points: int,
                 generator: torch.Generator, chain_length: int = CHAIN_LENGTH, burn_in: int = BURN_IN) -> torch.Tensor:
    """A batch of 3D IFS views: systems (B, N, 13) (3x3 linear part, shift, p); uint8 (B, 1, size, size)."""
    return renderer(IFS3DRenderer, systems.device, size, points, chain_length, burn_in)(systems, num_maps, eyes,
                                                                                         generator)
