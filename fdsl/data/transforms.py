"""timm transforms with the published flag semantics (spec 1.10, 1.12), always the CPU (no-prefetcher) path:
RandomResizedCrop, flips, RandAugment or ColorJitter, ToTensor, Normalize, RandomErasing."""
from __future__ import annotations

from PIL import Image, ImageOps
from timm.data import auto_augment, create_transform, resolve_data_config


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
