"""timm transforms with the published flag semantics (spec 1.10, 1.12), always the CPU (no-prefetcher) path:
RandomResizedCrop, flips, RandAugment or ColorJitter, ToTensor, Normalize, RandomErasing.

``crop_first`` runs the same transform on a uint8 array: its RandomResizedCrop is cut from the array (a gray
image resized as gray) before the RGB conversion, with the same random draws, so the output is the same.
"""
from __future__ import annotations

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


def data_config(args, model) -> dict:
    """input_size, interpolation, mean, std, crop_pct from the flags, else the model's pretrained cfg."""
    overrides = {
        "input_size": tuple(args.input_size) if args.input_size else None,
        "img_size": args.img_size,
        "mean": args.mean,
        "std": args.std,
        "interpolation": args.interpolation or None,
        "crop_pct": getattr(args, "crop_pct", None),
    }
    return resolve_data_config({k: v for k, v in overrides.items() if v is not None}, model=model)


def train_transform(args, cfg: dict):
    """One transform, or with --aug-splits timm's (base, augmentation, normalize) triple for AugMixDataset."""
    return create_transform(
        cfg["input_size"], is_training=True, no_aug=args.no_aug, scale=tuple(args.scale), ratio=tuple(args.ratio),
        hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter, auto_augment=args.aa,
        interpolation=args.train_interpolation if not args.no_aug else cfg["interpolation"],
        mean=cfg["mean"], std=cfg["std"], re_prob=args.reprob, re_mode=args.remode, re_count=args.recount,
        re_num_splits=args.aug_splits if args.resplit else 0, separate=args.aug_splits > 0,
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
