"""The ``--synthetic*`` flags of a device source as ``DeviceSourceOptions`` (the command line's edge)."""
from __future__ import annotations

from dataclasses import dataclass, field

from fdsl.errors import UserError


@dataclass
class DeviceSourceOptions:
    database: str  # --synthetic
    num_classes: int  # --num-classes
    size: int  # --synthetic-size, else the model's input size
    database_seed: int  # --synthetic-seed
    instances_per_class: int  # --synthetic-instances
    batch_size: int  # -b, per rank
    device: str  # --synthetic-device: cuda (the training GPU) or cpu
    seed: int = 0  # --seed: the order and augmentation of the batches
    repeated_aug: bool = False
    workers: int = 1  # processes computing the class parameters (-j)
    randaugment: str | None = None  # --aa, parsed before the class parameters are computed
    database_options: dict = field(default_factory=dict)  # --synthetic-opt KEY=VALUE

    @classmethod
    def from_args(cls, args) -> DeviceSourceOptions:
        size = args.synthetic_size or (args.input_size[-1] if args.input_size else args.img_size) or 224
        return cls(database=args.synthetic, num_classes=args.num_classes, size=size,
                   database_seed=args.synthetic_seed, instances_per_class=args.synthetic_instances,
                   batch_size=args.batch_size, device=args.synthetic_device, seed=args.seed,
                   repeated_aug=args.repeated_aug, workers=max(1, args.workers),
                   randaugment=args.aa if args.aa and not args.no_aug else None,
                   database_options=parse_options(args.synthetic_opt))


def parse_options(pairs: list[str] | None) -> dict:
    """``--synthetic-opt iterations=50000 draw_type=point_gray`` as database options (YAML-typed values)."""
    import yaml

    options = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UserError(f"--synthetic-opt {pair}: expected KEY=VALUE, e.g. iterations=50000")
        options[key.strip().lstrip("-").replace("-", "_")] = yaml.safe_load(value)
    return options

