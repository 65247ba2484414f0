"""Reading training images as uint8 arrays, and timm's RandomResizedCrop on them before any conversion.

``read_image`` gives HxW (gray) or HxWx3 (RGB) uint8: fdsl's own PNGs through the fast reader
(fdsl.data.png.decode), any other file through PIL, with the same pixels PIL's ``convert("RGB")`` gives
(gray files stay one channel; ``to_pil`` makes the RGB image the timm transforms expect).

``ResizedCrop`` is timm's RandomResizedCropAndInterpolation drawn with the same ``random`` calls in the same
order, so a seeded worker crops the same boxes, but cut from the uint8 array and resized as a gray image
when the file is gray: a 512 px gray image never becomes a 512 px RGB image. PIL resizes each channel
alone, so resizing gray then converting equals converting then resizing.
"""
from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from fdsl.data import png

INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
RANDOM = (Image.BILINEAR, Image.BICUBIC)  # timm's 'random' interpolation


def read_image(path: str) -> np.ndarray:
    """uint8 HxW or HxWx3 pixels of an image file. Raises OSError/ValueError for an unreadable file."""
    with open(path, "rb") as f:
        data = f.read()
    fast = png.decode(data)
    if fast is not None:
        return fast
    with Image.open(path) as img:  # by path, so PIL's errors name the file
        return np.asarray(img if img.mode == "L" else img.convert("RGB"))


def image_shape(path: str) -> tuple[int, int, int]:
    """(height, width, channels) that read_image gives, from the file's header only."""
    with open(path, "rb") as f:
        shape = png.header(f.read(33))
    if shape is not None:
        return shape
    with Image.open(path) as img:
        return img.height, img.width, 1 if img.mode == "L" else 3


def to_pil(pixels: np.ndarray) -> Image.Image:
    """The RGB PIL image of uint8 pixels (gray replicated, as PIL's convert('RGB'))."""
    img = Image.fromarray(np.ascontiguousarray(pixels))
    return img if img.mode == "RGB" else img.convert("RGB")


def crop_params(height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """(top, left, h, w): timm's RandomResizedCropAndInterpolation.get_params, the same ``random`` draws."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = random.uniform(*scale) * area
        aspect = math.exp(random.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if w <= width and h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height  # no attempt fitted: the central crop
    w, h = width, height
    if in_ratio < min(ratio):
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        w = round(h * max(ratio))
    return (height - h) // 2, (width - w) // 2, h, w


class ResizedCrop:
    """uint8 array -> PIL image of ``size`` (H, W): a random resized crop (timm's distribution), or with
    ``scale=None`` the whole image resized. Gray stays mode "L"; RGB stays "RGB"."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation: str = "bilinear"):
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.scale, self.ratio = scale, ratio
        self.interpolation = RANDOM if interpolation == "random" else INTERPOLATIONS[interpolation]

    def __call__(self, pixels: np.ndarray) -> Image.Image:
        height, width = pixels.shape[:2]
        if self.scale is None:
            top, left, h, w = 0, 0, height, width
        else:
            top, left, h, w = crop_params(height, width, self.scale, self.ratio)
        mode = random.choice(self.interpolation) if isinstance(self.interpolation, tuple) else self.interpolation
        box = Image.fromarray(np.ascontiguousarray(pixels[top:top + h, left:left + w]))
        return box.resize(self.size[::-1], mode)
