"""timm transforms with the published flag semantics (docs/training.md), always the CPU (no-prefetcher) path:
RandomResizedCrop, flips, RandAugment or ColorJitter, ToTensor, Normalize, RandomErasing.

``crop_first`` runs the same transform on a uint8 array: its RandomResizedCrop is cut from the array (a gray
image resized as gray) before the RGB conversion, with the same random draws, so the output is the same.
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageOps
from timm.data import auto_augment, create_transform, resolve_data_config
from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_pil_interp
from torchvision import transforms as tv

from fdsl.data.images import ResizedCrop


def _posterize(img, bits_to_keep, **__):
    """timm's posterize for Pillow >= 12, which rejects 0 bits: RandAugment 'inc1' asks for 0 bits whenever the
    sampled magnitude reaches 10 (about 2% of draws at m9-mstd0.5), which crashed the worker. 0 bits keeps
    nothing, i.e. a black image, as older Pillow returned."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    auto_augment.NAME_TO_OP[_name] = _posterize


@dataclass(frozen=True)
class InputSpec:
    """The model's input as the options give it; what they leave out comes from the model's pretrained cfg."""

    input_size: list[int] | None = None  # C H W
    img_size: int | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: str | None = None  # eval resize
    crop_pct: float | None = None  # eval center crop


@dataclass(frozen=True)
class TrainAugment:
    """The training augmentation options (timm's names and defaults)."""

    no_aug: bool = False
    scale: list[float] = (0.08, 1.0)
    ratio: list[float] = (3.0 / 4.0, 4.0 / 3.0)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float | None = 0.4
    aa: str | None = None  # AutoAugment / RandAugment / AugMix spec
    train_interpolation: str = "random"
    reprob: float = 0.0  # RandomErasing
    remode: str = "const"
    recount: int = 1
    aug_splits: int = 0  # AugMix: clean + augmented views
    resplit: bool = False


def data_config(inputs: InputSpec, model) -> dict:
    """input_size, interpolation, mean, std, crop_pct from the options, else the model's pretrained cfg."""
    overrides = {
        "input_size": tuple(inputs.input_size) if inputs.input_size else None,
        "img_size": inputs.img_size,
        "mean": inputs.mean,
        "std": inputs.std,
        "interpolation": inputs.interpolation or None,
        "crop_pct": inputs.crop_pct,
    }
    return resolve_data_config({k: v for k, v in overrides.items() if v is not None}, model=model)


def train_transform(augment: TrainAugment, cfg: dict):
    """One transform, or with aug_splits timm's (base, augmentation, normalize) triple for AugMixDataset."""
    return create_transform(
        cfg["input_size"], is_training=True, no_aug=augment.no_aug, scale=tuple(augment.scale),
        ratio=tuple(augment.ratio), hflip=augment.hflip, vflip=augment.vflip, color_jitter=augment.color_jitter,
        auto_augment=augment.aa,
        interpolation=augment.train_interpolation if not augment.no_aug else cfg["interpolation"],
        mean=cfg["mean"], std=cfg["std"], re_prob=augment.reprob, re_mode=augment.remode, re_count=augment.recount,
        re_num_splits=augment.aug_splits if augment.resplit else 0, separate=augment.aug_splits > 0,
    )


def eval_transform(cfg: dict):
    return create_transform(cfg["input_size"], is_training=False, interpolation=cfg["interpolation"],
                            mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"])


class CropFirst:
    """uint8 array -> ``rest(crop(array) as RGB)``: timm's training transform with its crop done first."""

    def __init__(self, crop: ResizedCrop, rest):
        self.crop, self.rest = crop, rest

    def __call__(self, pixels):
        img = self.crop(pixels)
        return self.rest(img if img.mode == "RGB" else img.convert("RGB"))


def crop_first(transform) -> CropFirst | None:
    """The CropFirst form of a timm training Compose that starts with RandomResizedCropAndInterpolation, else
    None (AugMix's separate stages, --no-aug's resize)."""
    steps = getattr(transform, "transforms", None)
    if not steps or not isinstance(steps[0], RandomResizedCropAndInterpolation):
        return None
    first = steps[0]
    modes = first.interpolation if isinstance(first.interpolation, (tuple, list)) else (first.interpolation,)
    crop = ResizedCrop(first.size, first.scale, first.ratio)
    pil = tuple(str_to_pil_interp(m.value) for m in modes)
    crop.interpolation = pil if len(pil) > 1 else pil[0]
    return CropFirst(crop, tv.Compose(steps[1:]))
