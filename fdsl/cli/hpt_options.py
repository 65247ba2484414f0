"""The `fdsl hpt pretrain|linear|finetune` command lines, built from the option tables of
fdsl.ssl.hpt.options: one flag per key, a stage config YAML (`--config`) as defaults, and the method's
published values for the options it leaves unset."""
from __future__ import annotations

import argparse
import os

import yaml

from fdsl.errors import UserError
from fdsl.ssl.hpt.options import METHOD_DEFAULTS, check_keys

# options whose default is None: their type on the command line (others: strings)
TYPES = {"batch_size": int, "accum_steps": int, "lr": float, "weight_decay": float, "warmup_iters": int,
         "neck_hidden": int, "dataset_size": int, "num_classes": int, "epochs": int, "pause_updates": int,
         "class_map": yaml.safe_load}


def _typed(default):
    if isinstance(default, bool):
        return lambda s: s.lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    return None


def add_options(parser: argparse.ArgumentParser, table: dict) -> None:
    for key, (default, text) in table.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, list):
            parser.add_argument(flag, dest=key, nargs="+", type=type(default[0]), default=default, help=text)
        elif isinstance(default, bool):
            parser.add_argument(flag, dest=key, nargs="?", const=True, type=_typed(default), default=default,
                                help=text)
        else:
            parser.add_argument(flag, dest=key, type=TYPES.get(key) or _typed(default), default=default, help=text)


def parse(parser: argparse.ArgumentParser, argv: list[str], table: dict) -> argparse.Namespace:
    """argv with `--config STAGE.yaml` as defaults: the file's keys are the option names, flags override."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        if not os.path.isfile(known.config):
            raise UserError(f"--config {known.config} does not exist")
        with open(known.config) as f:
            values = yaml.safe_load(f) or {}
        check_keys(values, table, known.config)
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    args.config = known.config
    return args


def fill_method_defaults(args) -> None:
    if args.method not in METHOD_DEFAULTS:
        raise UserError(f"--method {args.method!r}: choose moco or byol")
    for key, value in METHOD_DEFAULTS[args.method].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
