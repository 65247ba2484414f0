"""RandAugment's and ColorJitter's colour ops on float (B, C, H, W) images holding 0..255 integers, with PIL's
semantics (rounding, clamping, the border pixels Sharpness keeps). Each takes its per-sample argument as a
(B,) tensor."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).view(-1, 1, 1, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L: (299 R + 587 G + 114 B) / 1000, rounded."""
    if x.shape[1] == 1:
        return x
    return torch.round((x[:, :1] * 299 + x[:, 1:2] * 587 + x[:, 2:3] * 114) / 1000)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (degenerate + per_sample(factor) * (x - degenerate)).clamp(0, 255).round()


def brightness(x, factor):
    return _blend(torch.zeros_like(x), x, factor)


def contrast(x, factor):
    mean = torch.floor(luma(x).mean((1, 2, 3), keepdim=True) + 0.5)
    return _blend(mean.expand_as(x), x, factor)


def color(x, factor):
    return _blend(luma(x).expand_as(x), x, factor)


def sharpness(x, factor, kernel):
    """PIL's SMOOTH filter (``kernel``: (C, 1, 3, 3), BatchAugment.smooth) blended with the image."""
    channels = x.shape[1]
    smooth = F.conv2d(x, kernel[:channels], groups=channels).round()
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth  # PIL keeps the border pixels
    return _blend(degenerate, x, factor)


def autocontrast(x, _):
    low = x.amin((2, 3), keepdim=True)
    high = x.amax((2, 3), keepdim=True)
    scale = 255.0 / (high - low).clamp(min=1)
    return torch.where(high > low, torch.floor((x - low) * scale).clamp(0, 255), x)


def equalize(x, _):
    """PIL's ImageOps.equalize per channel: a lookup table from the histogram's running sum."""
    n, channels = x.shape[:2]
    values = x.to(torch.long).view(n * channels, -1)
    hist = torch.zeros(n * channels, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, values, torch.ones_like(values))
    last_nonzero = 255 - (hist.flip(1) > 0).to(torch.long).argmax(1, keepdim=True)
    step = (hist.sum(1, keepdim=True) - hist.gather(1, last_nonzero)) // 255
    running = torch.cumsum(hist, 1) - hist
    lut = ((step // 2 + running) // step.clamp(min=1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    return lut.gather(1, values).view_as(x).to(x.dtype)


def invert(x, _):
    return 255 - x


def posterize(x, bits):
    keep = per_sample(bits)
    quantum = torch.pow(2.0, 8 - keep.clamp(0, 8))
    return torch.where(keep <= 0, torch.zeros_like(x), torch.floor(x / quantum) * quantum)


def solarize(x, thresh):
    return torch.where(x >= per_sample(thresh), 255 - x, x)


def solarize_add(x, add):
    return torch.where(x < 128, (x + per_sample(add)).clamp(max=255), x)


# RandAugment's op names (spec.base_name of them) -> op; Sharpness also takes the smoothing kernel
COLOUR_OPS = {"AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert, "Posterize": posterize,
              "Solarize": solarize, "SolarizeAdd": solarize_add, "Color": color, "Contrast": contrast,
              "Brightness": brightness, "Sharpness": sharpness}
JITTER_OPS = (brightness, contrast, color)  # torchvision ColorJitter's order ids 0, 1, 2 (hue is off)
