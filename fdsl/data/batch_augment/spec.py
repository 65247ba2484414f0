"""What the recipe's augmentation asks for: ``AugmentSpec`` (crop, flips, interpolation, RandAugment or
ColorJitter, normalisation, random erasing) and ``RandAugmentSpec`` (timm's parsed ``rand-...`` string)."""
from __future__ import annotations

from dataclasses import dataclass, field

from fdsl.errors import UserError

LEVEL_DENOM = 10.0  # timm's magnitude scale
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "TranslateX", "TranslateY"}
COLOUR = {"AutoContrast", "Equalize", "Invert", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
          "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing", "Contrast",
          "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Sharpness", "SharpnessIncreasing"}
INTERPOLATIONS = ("bilinear", "bicubic")  # timm's 'random' choice


def base_name(op: str) -> str:
    """The op a RandAugment name varies: ``PosterizeIncreasing`` and ``PosterizeOriginal`` are ``Posterize``."""
    return op.removesuffix("Increasing").removesuffix("Original")


@dataclass
class RandAugmentSpec:
    """timm's parsed ``rand-...`` string: which ops, how many per image, with which magnitude."""

    ops: list
    num_layers: int = 2
    prob: float = 0.5
    magnitude: float = 10.0
    magnitude_std: float = 0.0
    magnitude_max: float | None = None
    weights: list | None = None  # weighted choice without replacement ('tweights'), else uniform with replacement
    translate_pct: float = 0.45
    translate_const: float = 100.0

    @classmethod
    def parse(cls, text: str, image_size: int) -> RandAugmentSpec:
        """Parse with timm's own parser, so every ``rand-m9-mstd0.5-inc1``-style option means what it does there."""
        from timm.data import auto_augment

        if not text.startswith("rand"):
            raise UserError(f"--aa {text}: device augmentation (--synthetic-device, --gpu-augment) supports "
                            f"RandAugment ('rand-...') only; use e.g. --aa rand-m9-mstd0.5-inc1, or drop the flag")
        try:
            ra = auto_augment.rand_augment_transform(text, {"translate_const": int(image_size * 0.45)})
        except (AssertionError, ValueError, KeyError) as err:
            raise UserError(f"--aa {text}: not a RandAugment spec timm understands ({err})") from None
        names = [op.name for op in ra.ops]
        unknown = sorted(set(names) - GEOMETRIC - COLOUR)
        if unknown:
            raise UserError(f"--aa {text}: op(s) {unknown} are not implemented for device augmentation "
                            f"(--synthetic-device, --gpu-augment); use the default op set (e.g. rand-m9-mstd0.5-inc1)")
        first = ra.ops[0]
        weights = None if ra.choice_weights is None else [float(w) for w in ra.choice_weights]
        return cls(names, ra.num_layers, first.prob, float(first.magnitude), float(first.magnitude_std),
                   first.magnitude_max, weights, first.hparams.get("translate_pct", 0.45),
                   float(first.hparams["translate_const"]))


@dataclass
class AugmentSpec:
    size: tuple = (224, 224)  # output (H, W)
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.0
    interpolation: str = "random"
    randaugment: RandAugmentSpec | None = None
    color_jitter: float = 0.0
    re_prob: float = 0.0
    re_mode: str = "const"
    re_count: int = 1
    no_aug: bool = False
    channels: int = 3
    fill: tuple = field(default=(124, 116, 104))

    @classmethod
    def from_args(cls, args, cfg: dict) -> AugmentSpec:
        """The engine's flags and the resolved data config (fdsl.data.transforms.data_config)."""
        channels, height, width = cfg["input_size"]
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        interpolation = cfg["interpolation"] if args.no_aug else args.train_interpolation
        if interpolation not in (*INTERPOLATIONS, "random", "nearest"):
            raise UserError(f"--train-interpolation {interpolation}: device batches support random, bilinear, "
                            f"bicubic or nearest")
        if (args.remode or "const") not in ("const", "rand", "pixel"):
            raise UserError(f"--remode {args.remode}: use const, rand or pixel")
        aa = RandAugmentSpec.parse(args.aa, min(height, width)) if args.aa and not args.no_aug else None
        jitter = 0.0 if aa or args.no_aug or args.color_jitter is None else float(args.color_jitter)
        return cls(size=(height, width), mean=mean, std=std, scale=tuple(args.scale), ratio=tuple(args.ratio),
                   hflip=args.hflip, vflip=args.vflip, interpolation=interpolation, randaugment=aa,
                   color_jitter=jitter, re_prob=0.0 if args.no_aug else args.reprob, re_mode=args.remode or "const",
                   re_count=args.recount, no_aug=args.no_aug, channels=channels,
                   fill=tuple(min(255, round(255 * m)) for m in mean) if len(mean) == 3 else (128, 128, 128))

    @property
    def augmenting(self) -> bool:
        """False under --no-aug: resize and normalise only, as timm's no_aug transform."""
        return not self.no_aug

    @property
    def erasing(self) -> bool:
        return self.re_prob > 0 and self.augmenting
