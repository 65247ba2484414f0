"""``BatchAugment``: the whole augmentation of a uint8 batch, each sample with its own random parameters.

Every constant table (normalisation, fill colour, the sharpness kernel) is made on the device in ``to``: a
table first copied in the middle of a step would be a blocking host-to-device copy, which waits for the GPU
(torch.cuda.set_sync_debug_mode("error") rejects it). The device work (``apply``) takes device tensors only
and has static shapes: each colour op runs on the whole batch and is kept where the sample drew it, and the
random erasing noise is drawn before it, so it compiles as one graph (``torch.compile(fullgraph=True)``, used
under ``--torch-compile``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fdsl.data.batch_augment import colour_ops
from fdsl.data.batch_augment.device_params import DeviceParams, upload
from fdsl.data.batch_augment.geometry import inside_fill, sampling_grid
from fdsl.data.batch_augment.plan import Plan, draw_plan
from fdsl.data.batch_augment.spec import GEOMETRIC, INTERPOLATIONS, AugmentSpec, base_name
from fdsl.render.gpu import to_device


class BatchAugment:
    """``augment(images, host_generator, device_generator)``: uint8 (B, C, S, S) -> normalised float
    (B, channels, H, W) on ``device`` (the images' device), every sample with its own random parameters.
    ``crops`` (B, 4) (top, left, h, w), when given, are the crop boxes (drawn by the caller)."""

    def __init__(self, spec: AugmentSpec, device=None):
        self.spec = spec
        self.device: torch.device | None = None
        if device is not None:  # else the constant tables go to the device of the first batch augmented
            self.to(device)

        ops = spec.randaugment.ops if spec.randaugment else []
        self.colour_names = [name for name in dict.fromkeys(ops) if name not in GEOMETRIC]  # index = op id
        self.modes = ["nearest"] if spec.interpolation == "nearest" else (
            [spec.interpolation] if spec.interpolation in INTERPOLATIONS else list(INTERPOLATIONS))

    def to(self, device) -> BatchAugment:
        """The constant tables (normalisation, fill colour, sharpness kernel) on ``device``, made there once and
        copied without a stream synchronisation (a blocking copy would wait for the step queued before it)."""
        device = torch.device(device)
        here = self.device
        if here is not None and here.type == device.type and device.index in (None, here.index):
            return self
        channels = self.spec.channels

        def table(values):
            return to_device(torch.tensor(values, dtype=torch.float32), device)

        self.mean = table(self.spec.mean).view(1, -1, 1, 1)
        self.std = table(self.spec.std).view(1, -1, 1, 1)
        self.fill = table(self.spec.fill[:channels]).view(1, -1, 1, 1)
        self.smooth = table([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]).div(13).expand(channels, 1, 3, 3).contiguous()
        self.device = self.mean.device
        return self

    def __call__(self, images: torch.Tensor, host: torch.Generator, device_generator: torch.Generator,
                 crops: torch.Tensor | None = None):
        plan = self.sample(images.shape[0], images.shape[-1], host, crops)
        self.to(images.device)
        return self.apply(images, self.upload(plan, images.device), self.erase_noise(images, device_generator))

    def sample(self, batch: int, source: int, g: torch.Generator, crops: torch.Tensor | None = None) -> Plan:
        """The host half: every sample's parameters (fdsl.data.batch_augment.plan)."""
        return draw_plan(self.spec, batch, source, g, crops)

    def upload(self, plan: Plan, device) -> DeviceParams:
        return upload(plan, self.spec.size, self.colour_names, device)

    def erase_noise(self, images: torch.Tensor, device_generator: torch.Generator) -> list:
        """The random fill of each erasing round (drawn on the device, outside the compiled part)."""
        if not self.spec.erasing or self.spec.re_mode == "const":
            return []
        batch, channels, (height, width) = images.shape[0], self.spec.channels, self.spec.size
        shape = (batch, channels, height, width) if self.spec.re_mode == "pixel" else (batch, channels, 1, 1)
        return [torch.randn(shape, generator=device_generator, device=images.device)
                for _ in range(self.spec.re_count)]

    def apply(self, images: torch.Tensor, params: DeviceParams, noise: list) -> torch.Tensor:
        """The device work, from device tensors only: no host copy, no data-dependent shape, no generator, so
        it compiles as one graph (torch.compile(fullgraph=True)). The tables must be on the images' device
        (``to``; ``__call__`` sees to it)."""
        x, inside = self.warp(images.float(), params)
        x = self.to_channels(x, inside)
        x = self.colour(x, params)
        x = (x / 255.0 - self.mean) / self.std
        return self.erase(x, params, noise)

    # -- geometry: one resampling ----------------------------------------------------------------------------
    def warp(self, images: torch.Tensor, params: DeviceParams) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Crop, flips and geometric ops by one ``grid_sample`` per interpolation mode; also the mask of pixels
        a geometric op took from outside its input (None without geometric ops)."""
        height, width = self.spec.size
        supersample, source = params.supersample, images.shape[-1]
        grid = sampling_grid(params.output_to_source, height, width, supersample, source, images.device)
        outs = [F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)
                for mode in self.modes]
        out = outs[0]
        for index, other in enumerate(outs[1:], 1):  # each sample keeps its own interpolation's result
            out = torch.where((params.interp == index).view(-1, 1, 1, 1), other, out)
        if supersample > 1:
            out = F.avg_pool2d(out, supersample)
        inside = inside_fill(params.op_maps, height, width, images.device) if params.op_maps else None
        return out.clamp(0, 255).round(), inside

    def to_channels(self, x: torch.Tensor, inside: torch.Tensor | None) -> torch.Tensor:
        """Gray renders become RGB (as PIL's convert('RGB')); geometric ops' outside gets the fill colour."""
        channels = self.spec.channels
        if x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = colour_ops.luma(x)
        if inside is not None:
            x = torch.where(inside, x, self.fill)
        return x.contiguous()

    # -- colour --------------------------------------------------------------------------------------------
    def colour(self, x: torch.Tensor, params: DeviceParams) -> torch.Tensor:
        """Each layer: every colour op of the policy on the whole batch, kept where the sample drew it (a
        masked select instead of gathering rows keeps the shapes static for torch.compile)."""
        for op_id, arg in params.colour:
            for index, name in enumerate(self.colour_names):
                op = colour_ops.COLOUR_OPS[base_name(name)]
                out = op(x, arg, self.smooth) if op is colour_ops.sharpness else op(x, arg)
                x = torch.where((op_id == index).view(-1, 1, 1, 1), out, x)
        if params.jitter is not None:
            factors, order = params.jitter
            for position in range(3):
                for op_index, op in enumerate(colour_ops.JITTER_OPS):
                    chosen = (order[:, position] == op_index).view(-1, 1, 1, 1)
                    x = torch.where(chosen, op(x, factors[:, op_index]), x)
        return x

    # -- random erasing ------------------------------------------------------------------------------------
    def erase(self, x: torch.Tensor, params: DeviceParams, noise: list) -> torch.Tensor:
        """timm's RandomErasing per sample: up to ``re_count`` boxes filled with 0 (const), one normal colour
        per channel (rand) or normal noise per pixel (pixel), on the normalised image."""
        _, _, height, width = x.shape
        rows = torch.arange(height, device=x.device).view(1, height, 1)
        cols = torch.arange(width, device=x.device).view(1, 1, width)
        for k, box in enumerate(params.erase):
            top, left, h, w = (box[:, i].view(-1, 1, 1) for i in range(4))
            inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
            fill = noise[k] if noise else torch.zeros((), device=x.device)
            x = torch.where(inside[:, None], fill, x)
        return x
