"""The two augmented views of MoCo v2 (HPT template) and BYOL (asymmetric), with the dataset's own mean/std.

All randomness comes from torch's RNG (torchvision transforms; the blur draws its sigma with torch too), so
a per-sample seed makes every view reproducible.

MoCo v2 (HPT, docs/hpt.md), both views from one pipeline:
    RandomResizedCrop(size, scale 0.2-1) -> p 0.8 ColorJitter(0.4, 0.4, 0.4, hue 0.4) -> p 0.2 grey
    -> p 0.5 Gaussian blur sigma U[0.1, 2] (PIL) -> flip -> tensor -> normalise
  `hue=0.1` gives the upstream OpenSelfSup MoCo v2 pipeline. Ablation variants of the HPT configs:
  crop_only (= "simple", the rrcaug HPT-BN configs: crop + flip), crop_blur, rm_color, rm_gray.
BYOL (docs/hpt.md), view 1 / view 2:
    RandomResizedCrop(size, bicubic, scale 0.08-1) -> flip -> p 0.8 ColorJitter(0.4, 0.4, 0.2, 0.1)
    -> p 0.2 grey -> blur p 1.0 / 0.1 -> solarize(128) p 0 / 0.2 -> tensor -> normalise
"""
from __future__ import annotations

import torch
from PIL import ImageFilter
from torchvision import transforms as T

from fdsl.errors import UserError

MOCO_VARIANTS = ("full", "crop_only", "simple", "crop_blur", "rm_color", "rm_gray")


class RandomPILBlur:
    """With probability p, PIL Gaussian blur with sigma uniform in [low, high] (radius = sigma, as published)."""

    def __init__(self, p: float, sigma: tuple[float, float] = (0.1, 2.0)):
        self.p = p
        self.sigma = sigma

    def __call__(self, img):
        if self.p <= 0 or torch.rand(()).item() >= self.p:
            return img
        low, high = self.sigma
        return img.filter(ImageFilter.GaussianBlur(radius=low + (high - low) * torch.rand(()).item()))

    def __repr__(self) -> str:
        return f"RandomPILBlur(p={self.p}, sigma={self.sigma})"


def _finish(mean, std) -> list:
    return [T.ToTensor(), T.Normalize(mean, std)]


def moco_view(size: int, mean, std, variant: str = "full", hue: float = 0.4) -> T.Compose:
    if variant not in MOCO_VARIANTS:
        raise UserError(f"--aug {variant!r}: choose one of {', '.join(MOCO_VARIANTS)}")
    steps = [T.RandomResizedCrop(size, scale=(0.2, 1.0))]
    if variant in ("full", "rm_gray"):
        steps.append(T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, hue)], p=0.8))
    if variant in ("full", "rm_color"):
        steps.append(T.RandomGrayscale(p=0.2))
    if variant in ("full", "rm_color", "rm_gray", "crop_blur"):
        steps.append(RandomPILBlur(0.5))
    steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + _finish(mean, std))


def byol_view(size: int, mean, std, blur_p: float, solarize_p: float) -> T.Compose:
    steps = [T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
             T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
             RandomPILBlur(blur_p)]
    if solarize_p > 0:
        steps.append(T.RandomSolarize(128, p=solarize_p))
    return T.Compose(steps + _finish(mean, std))


class TwoViews:
    """img -> (view_1(img), view_2(img))."""

    def __init__(self, first, second=None):
        self.first = first
        self.second = second if second is not None else first

    def __call__(self, img):
        return self.first(img), self.second(img)

    def __repr__(self) -> str:
        return f"TwoViews(\n  {self.first},\n  {self.second})"


def build_views(method: str, size: int, mean, std, variant: str = "full", hue: float = 0.4) -> TwoViews:
    if method == "byol":
        return TwoViews(byol_view(size, mean, std, 1.0, 0.0), byol_view(size, mean, std, 0.1, 0.2))
    return TwoViews(moco_view(size, mean, std, variant, hue))

