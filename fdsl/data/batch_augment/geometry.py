"""Affine maps from output pixels to source pixels (built on the host, (B, 3, 3) float32), and what the device
does with them: the resampling grid and the mask of pixels a geometric op took from outside its input."""
from __future__ import annotations

import torch


def affine(a, b, c, d, e, f) -> torch.Tensor:
    """(B, 3, 3) maps (x, y) -> (a x + b y + c, d x + e y + f), from (B,) float tensors."""
    a = torch.as_tensor(a, dtype=torch.float32)
    rows = [torch.as_tensor(v, dtype=torch.float32).expand_as(a) for v in (a, b, c, d, e, f)]
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([torch.stack(rows[:3], -1), torch.stack(rows[3:], -1), torch.stack([zero, zero, one], -1)], 1)


def geometric_map(name: str, arg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A RandAugment geometric op as output->input 3x3 maps in pixel units, as PIL's affine transforms in
    timm's ops."""
    zero, one = torch.zeros_like(arg), torch.ones_like(arg)
    if name == "ShearX":
        return affine(one, arg, zero, zero, one, zero)
    if name == "ShearY":
        return affine(one, zero, zero, arg, one, zero)
    if name in ("TranslateXRel", "TranslateX"):
        return affine(one, zero, arg * width if name.endswith("Rel") else arg, zero, one, zero)
    if name in ("TranslateYRel", "TranslateY"):
        return affine(one, zero, zero, zero, one, arg * height if name.endswith("Rel") else arg)
    # Rotate: PIL's rotate(degrees) about the centre, counter-clockwise on screen
    a = torch.deg2rad(-arg)
    cx, cy = width / 2.0, height / 2.0
    cos, sin = torch.cos(a), torch.sin(a)
    return affine(cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


def sampling_grid(maps: torch.Tensor, height: int, width: int, supersample: int, source: int,
                  device) -> torch.Tensor:
    """grid_sample's (B, H s, W s, 2) grid: sub-pixel centres of the output mapped into the source's [-1, 1]."""
    ys = (torch.arange(height * supersample, device=device) + 0.5) / supersample
    xs = (torch.arange(width * supersample, device=device) + 0.5) / supersample
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx, yy, torch.ones_like(xx)], -1).view(-1, 3)
    source_xy = torch.einsum("bij,pj->bpi", maps[:, :2], points)
    return (source_xy / source * 2 - 1).view(len(maps), height * supersample, width * supersample, 2)


def inside_fill(op_maps: list, height: int, width: int, device) -> torch.Tensor:
    """(B, 1, H, W): False where a geometric op sampled outside its input (PIL fills with the fill colour)."""
    ys = torch.arange(height, device=device) + 0.5
    xs = torch.arange(width, device=device) + 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([xx, yy, torch.ones_like(xx)], -1).view(-1, 3)
    inside = torch.ones(len(op_maps[0]), points.shape[0], dtype=torch.bool, device=device)
    current = points.expand(len(op_maps[0]), -1, -1)
    for op_map in reversed(op_maps):
        current = torch.einsum("bij,bpj->bpi", op_map, current)
        inside &= (current[..., 0] >= 0) & (current[..., 0] < width) & (current[..., 1] >= 0) & (
            current[..., 1] < height)
    return inside.view(-1, 1, height, width)
