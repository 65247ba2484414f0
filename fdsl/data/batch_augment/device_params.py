"""A host ``Plan`` as the device work takes it: ``DeviceParams``, device tensors and python numbers only, in
the same structure every batch, so ``BatchAugment.apply`` compiles as one graph."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from fdsl.data.batch_augment.geometry import affine
from fdsl.data.batch_augment.plan import Plan
from fdsl.render.gpu import to_device


@dataclass
class DeviceParams:
    output_to_source: torch.Tensor  # (B, 3, 3): crop, flips and geometric ops as one output->source map
    supersample: int  # sub-samples per output pixel side, 1..4 (antialiased downscaling)
    interp: torch.Tensor  # (B,) long: index into BatchAugment.modes
    op_maps: list[torch.Tensor]  # per RandAugment layer (B, 3, 3), identity where no geometric op was drawn
    colour: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # per layer: (op id, -1 for
    # none, index into BatchAugment.colour_names; the op's argument), both (B,)
    jitter: tuple[torch.Tensor, torch.Tensor] | None = None  # (factors (B, 3), order (B, 3))
    erase: list[torch.Tensor] = field(default_factory=list)  # per box round (B, 4), as Plan.erase


def upload(plan: Plan, size: tuple, colour_names: list[str], device) -> DeviceParams:
    """``plan`` for output ``size`` (H, W) on ``device``, copied without waiting for the device."""
    height, width = size
    batch = len(plan.crop)
    crop, zero = plan.crop, torch.zeros(batch, dtype=torch.float32)
    top, left, crop_h, crop_w = crop.unbind(1)
    crop_map = affine(crop_w / width, zero, left, zero, crop_h / height, top)  # output -> crop box
    hflip, vflip = plan.hflip, plan.vflip
    flip_map = affine(torch.where(hflip, -1.0, 1.0), zero, torch.where(hflip, float(width), 0.0),
                      zero, torch.where(vflip, -1.0, 1.0), torch.where(vflip, float(height), 0.0))
    identity = torch.eye(3, dtype=torch.float32).expand(batch, 3, 3)
    # one map per layer, identity where the layer drew no geometric op: the same list length every batch
    op_maps = [identity if layer.geometry is None else layer.geometry for layer in plan.layers]
    geometry = identity
    for op_map in op_maps:
        geometry = geometry @ op_map
    scale = float((crop[:, 2:] / torch.tensor([height, width], dtype=torch.float32)).max())
    params = DeviceParams(output_to_source=to_device(crop_map @ flip_map @ geometry, device),
                          supersample=max(1, min(4, math.ceil(scale - 1e-6))),
                          interp=to_device(plan.interp, device),
                          op_maps=[to_device(op_map, device) for op_map in op_maps],
                          erase=[to_device(box, device) for box in plan.erase])
    for layer in plan.layers:  # every layer, also one whose samples drew no colour op: a static structure
        op_id = torch.full((batch,), -1, dtype=torch.long)
        for name, rows in layer.colour.items():
            op_id[rows] = colour_names.index(name)
        params.colour.append((to_device(op_id, device), to_device(layer.arg, device)))
    if plan.jitter is not None:
        params.jitter = (to_device(plan.jitter, device), to_device(plan.jitter_order, device))
    return params
