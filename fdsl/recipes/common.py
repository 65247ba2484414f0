"""What every recipe passes to the epoch driver from its command line."""
from __future__ import annotations

from dataclasses import fields


def spec_of(spec_class, args):
    """A typed spec (a dataclass) from the options of the same names; an option the command lacks keeps the
    spec's default."""
    values = vars(args)
    return spec_class(**{f.name: values[f.name] for f in fields(spec_class) if f.name in values})


def plain_args(args) -> dict:
    """args as a dict of plain values: loads with torch.load(weights_only=True) and dumps as YAML."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
            if v is None or isinstance(v, (str, int, float, bool, list, tuple, dict))}


def trackers_args(args):
    """The options wandb / TensorBoard are opened with, or None when neither is asked for."""
    return args if (args.log_wandb or args.log_tensorboard) else None
