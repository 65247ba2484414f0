"""What every recipe builds from its command line: the typed specs the layers below take, the run's options as
plain values, the trackers."""
from __future__ import annotations

import dataclasses
from dataclasses import fields

from fdsl.engine.logging import TrackerSpec
from fdsl.engine.schedule import ScheduleSpec, scaled_lrs
from fdsl.models.factory import ModelSpec


def spec_of(spec_class, args):
    """A typed spec (a dataclass) from the options of the same names; an option the command lacks keeps the
    spec's default."""
    values = vars(args)
    return spec_class(**{f.name: values[f.name] for f in fields(spec_class) if f.name in values})


def plain_args(args) -> dict:
    """args as a dict of plain values: loads with torch.load(weights_only=True) and dumps as YAML."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
            if v is None or isinstance(v, (str, int, float, bool, list, tuple, dict))}


def tracker_spec(args) -> TrackerSpec:
    """wandb / TensorBoard as the options ask, with all the options as wandb's config."""
    return dataclasses.replace(spec_of(TrackerSpec, args), config=dict(vars(args)))


def trackers_args(args) -> TrackerSpec | None:
    """The trackers' spec, or None when neither wandb nor TensorBoard is asked for."""
    return tracker_spec(args) if (args.log_wandb or args.log_tensorboard) else None


def model_spec(args) -> ModelSpec:
    return spec_of(ModelSpec, args)


def schedule_spec(args) -> ScheduleSpec:
    return spec_of(ScheduleSpec, args)


def scale_lr(args, global_batch: int) -> None:
    """--lr-scale-batch (the hydra trainers' rule): --lr, --warmup-lr and --min-lr scaled to the global batch."""
    args.lr, args.warmup_lr, args.min_lr = scaled_lrs(args.lr, args.warmup_lr, args.min_lr, args.lr_scale_batch,
                                                      global_batch)
