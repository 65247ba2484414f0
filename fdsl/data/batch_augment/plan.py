"""Every sample's random parameters, drawn on the host from a CPU ``torch.Generator`` (cheap, and the same on
every device): crop box, flips, interpolation, RandAugment's ops and magnitudes, colour jitter, erasing
boxes. The rules are timm's (named per function); the order of the draws is part of the output."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fdsl.data.batch_augment.geometry import geometric_map
from fdsl.data.batch_augment.spec import GEOMETRIC, LEVEL_DENOM, AugmentSpec, RandAugmentSpec, base_name


@dataclass
class RandAugmentLayer:
    """One RandAugment layer of a batch: the rows that apply each colour op, every sample's op argument (0
    where the sample's op is not applied) and, when some sample drew a geometric op, (B, 3, 3) output->input
    maps (identity for the other samples)."""

    arg: torch.Tensor  # (B,) float32
    colour: dict[str, torch.Tensor] = field(default_factory=dict)  # op name -> rows (LongTensor)
    geometry: torch.Tensor | None = None


@dataclass
class Plan:
    """A batch's augmentation parameters on the host, one row per sample."""

    crop: torch.Tensor  # (B, 4) float32 (top, left, h, w) in source pixels
    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    interp: torch.Tensor  # (B,) long: index into BatchAugment.modes
    layers: list[RandAugmentLayer] = field(default_factory=list)
    jitter: torch.Tensor | None = None  # (B, 3) brightness, contrast, saturation factors
    jitter_order: torch.Tensor | None = None  # (B, 3) the order of the three (ColorJitter's permutation)
    erase: list[torch.Tensor] = field(default_factory=list)  # per box round: (B, 4) (top, left, h, w), h = 0: none


def draw_plan(spec: AugmentSpec, batch: int, source: int, g: torch.Generator,
              crops: torch.Tensor | None = None) -> Plan:
    """The plan of ``batch`` square ``source`` x ``source`` images; ``crops`` (B, 4), when given, are the crop
    boxes (drawn by the caller, fdsl.data.batch_augment.folder)."""
    if crops is not None:
        crop = crops.to(torch.float32)
    else:
        crop = full_crops(batch, source) if spec.no_aug else _resized_crops(batch, source, spec, g)
    plan = Plan(crop=crop,
                hflip=torch.rand(batch, generator=g) < (0 if spec.no_aug else spec.hflip),
                vflip=torch.rand(batch, generator=g) < (0 if spec.no_aug else spec.vflip),
                interp=(torch.randint(0, 2, (batch,), generator=g) if spec.interpolation == "random"
                        else torch.zeros(batch, dtype=torch.long)))
    if spec.randaugment and spec.augmenting:
        plan.layers = _randaugment_layers(batch, spec, g)
    if spec.color_jitter > 0 and spec.augmenting:
        low = max(0.0, 1 - spec.color_jitter)
        plan.jitter = low + torch.rand(batch, 3, generator=g) * (1 + spec.color_jitter - low)
        plan.jitter_order = torch.rand(batch, 3, generator=g).argsort(1)
    if spec.erasing:
        plan.erase = _erase_boxes(batch, spec, g)
    return plan


def _uniform(shape, low, high, g):
    return low + torch.rand(shape, generator=g, dtype=torch.float32) * (high - low)


def _randint_inclusive(high: torch.Tensor, g) -> torch.Tensor:
    """U{0..high} per element (python's random.randint(0, high))."""
    return (torch.rand(high.shape, generator=g, dtype=torch.float32) * (high + 1)).floor().clamp(max=high)


def full_crops(batch: int, source: int) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, source, source]], dtype=torch.float32).expand(batch, 4).clone()


def _resized_crops(batch: int, source: int, spec: AugmentSpec, g) -> torch.Tensor:
    """(top, left, h, w) per sample, as timm's RandomResizedCropAndInterpolation.get_params on a square:
    10 attempts, the first that fits, else the central fallback."""
    area = float(source * source)
    attempts = 10
    target = _uniform((batch, attempts), *spec.scale, g) * area
    ratio = torch.exp(_uniform((batch, attempts), math.log(spec.ratio[0]), math.log(spec.ratio[1]), g))
    w = torch.round(torch.sqrt(target * ratio))
    h = torch.round(torch.sqrt(target / ratio))
    fits = (w <= source) & (h <= source)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    pick = first.clamp(min=0)[:, None]
    h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
    top = _randint_inclusive(source - h, g)
    left = _randint_inclusive(source - w, g)
    fallback = _central_crop(source, spec.ratio)
    none_fit = (first < 0)[:, None]
    return torch.where(none_fit, fallback, torch.stack([top, left, h, w], 1))


def _central_crop(source: int, ratio) -> torch.Tensor:
    w = h = float(source)
    if 1.0 < min(ratio):
        h = float(round(w / min(ratio)))
    elif 1.0 > max(ratio):
        w = float(round(h * max(ratio)))
    return torch.tensor([(source - h) // 2, (source - w) // 2, h, w], dtype=torch.float32)


def _randaugment_layers(batch: int, spec: AugmentSpec, g) -> list[RandAugmentLayer]:
    """Per layer: which op each sample draws, whether it applies (prob), its magnitude argument, and for
    geometric ops the output->input map."""
    ra = spec.randaugment
    n_ops = len(ra.ops)
    if ra.weights is None:
        choice = torch.randint(0, n_ops, (batch, ra.num_layers), generator=g)
    else:
        weights = torch.tensor(ra.weights, dtype=torch.float32).expand(batch, n_ops)
        choice = torch.multinomial(weights, ra.num_layers, replacement=False, generator=g)
    height, width = spec.size
    layers = []
    for layer in range(ra.num_layers):
        applied = torch.rand(batch, generator=g) <= ra.prob
        magnitude = torch.full((batch,), ra.magnitude, dtype=torch.float32)
        if ra.magnitude_std == math.inf:
            magnitude = _uniform(batch, 0.0, ra.magnitude, g)
        elif ra.magnitude_std > 0:
            magnitude = magnitude + ra.magnitude_std * torch.randn(batch, generator=g, dtype=torch.float32)
        level = magnitude.clamp(0.0, ra.magnitude_max or LEVEL_DENOM) / LEVEL_DENOM
        sign = torch.where(torch.rand(batch, generator=g) > 0.5, -1.0, 1.0).to(torch.float32)
        drawn = RandAugmentLayer(arg=torch.zeros(batch, dtype=torch.float32))
        geometry_rows = []
        for k in choice[:, layer].unique().tolist():
            name = ra.ops[k]
            rows = ((choice[:, layer] == k) & applied).nonzero().flatten()
            if not len(rows):
                continue
            drawn.arg[rows] = _level(name, level[rows], sign[rows], ra)
            if name in GEOMETRIC:
                geometry_rows.append((name, rows))
            else:
                drawn.colour[name] = rows
        if geometry_rows:
            drawn.geometry = torch.eye(3, dtype=torch.float32).repeat(batch, 1, 1)
            for name, rows in geometry_rows:
                drawn.geometry[rows] = geometric_map(name, drawn.arg[rows], height, width)
        layers.append(drawn)
    return layers


def _level(name: str, level: torch.Tensor, sign: torch.Tensor, ra: RandAugmentSpec) -> torch.Tensor:
    """timm's LEVEL_TO_ARG for a magnitude fraction ``level`` = m / 10 (and the random sign)."""
    base = base_name(name)
    increasing = name.endswith("Increasing")
    if name == "Rotate":
        return level * 30.0 * sign
    if name in ("ShearX", "ShearY"):
        return level * 0.3 * sign
    if name in ("TranslateXRel", "TranslateYRel"):
        return level * ra.translate_pct * sign
    if name in ("TranslateX", "TranslateY"):
        return level * ra.translate_const * sign
    if name == "PosterizeOriginal":
        return (level * 4).floor() + 4
    if base == "Posterize":
        bits = (level * 4).floor()
        return 4 - bits if increasing else bits
    if base == "Solarize":
        thresh = (level * 256).floor().clamp(max=256)
        return 256 - thresh if increasing else thresh
    if name == "SolarizeAdd":
        return (level * 110).floor().clamp(max=128)
    if base in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (1.0 + sign * level * 0.9).clamp(min=0.1) if increasing else level * 1.8 + 0.1
    return torch.zeros_like(level)  # AutoContrast, Equalize, Invert


def _erase_boxes(batch: int, spec: AugmentSpec, g) -> list[torch.Tensor]:
    """Per box round: (top, left, h, w) per sample, h = 0 where nothing is erased (timm's RandomErasing:
    probability, 1..re_count boxes each of area U(0.02, 1/3) / count, 10 attempts for one that fits)."""
    height, width = spec.size
    erased = torch.rand(batch, generator=g) <= spec.re_prob
    count = torch.randint(1, spec.re_count + 1, (batch,), generator=g) if spec.re_count > 1 else torch.ones(
        batch, dtype=torch.long)
    boxes = []
    for k in range(spec.re_count):
        attempts = 10
        target = _uniform((batch, attempts), 0.02, 1 / 3, g) * (height * width) / count[:, None]
        ratio = torch.exp(_uniform((batch, attempts), math.log(0.3), math.log(1 / 0.3), g))
        h = torch.round(torch.sqrt(target * ratio))
        w = torch.round(torch.sqrt(target / ratio))
        fits = (w < width) & (h < height)
        pick = fits.float().argmax(1, keepdim=True)
        h, w = h.gather(1, pick)[:, 0], w.gather(1, pick)[:, 0]
        top = _randint_inclusive(height - h, g)
        left = _randint_inclusive(width - w, g)
        active = erased & fits.any(1) & (k < count)
        boxes.append(torch.stack([top, left, torch.where(active, h, 0.0), w], 1))
    return boxes
