"""timm's spellings that `fdsl pretrain` / `fdsl finetune` honour beyond the published flags: what `--dataset`
names, and which `--device` this machine has.

timm's train.py picks its reader by `--dataset`: '' (or any bare name) is an image folder, `wds/NAME` webdataset
shards named by `--train-split` under DIR, `torch/`, `hfds/`, `hfids/` and `tfds/` readers that download or
need other libraries (timm/data/dataset_factory.py, create_dataset; timm/data/readers/reader_wds.py,
_parse_split_info). fdsl reads the first two and refuses the rest in one line.
"""
from __future__ import annotations

import argparse
import os
import re

from fdsl.errors import UserError

FOLDER_NAMES = ("", "folder", "imagefolder", "image_folder")
READS = "fdsl reads an image folder (--dataset '', folder or ImageFolder) or webdataset shards (--dataset wds/NAME)"
FDSL_SHARD = re.compile(r"^SHARDS-(\d{6})\.tar$")  # what `fdsl render --format wds` writes


def dataset_form(value: str) -> str:
    """'folder' or 'wds' for a --dataset value fdsl reads; one clear line for any other."""
    prefix, slash, _ = value.strip().partition("/")
    if not slash and value.strip().lower() in FOLDER_NAMES:
        return "folder"
    if prefix.lower() == "wds":
        return "wds"
    raise UserError(f"--dataset {value!r}: {READS}; for another source export it to an image folder "
                    f"(DIR/train/<class>/*.png) first")


def resolve_dataset(args: argparse.Namespace) -> None:
    """Turn --dataset wds/NAME into the shard flags the engine reads (-w, --trainshards, --dataset_size)."""
    form = dataset_form(args.dataset or "")
    explicit = bool((args.dataset or "").strip())
    if getattr(args, "synthetic", None) and explicit:
        raise UserError(f"--synthetic {args.synthetic} renders its own images; drop --dataset {args.dataset}")
    if form == "folder":
        if explicit and getattr(args, "webdataset", False):
            raise UserError(f"--dataset {args.dataset} reads an image folder but -w/--webdataset reads shards; "
                            f"drop one (or use --dataset wds/NAME)")
        return
    pattern, samples = shard_pattern(args)
    if not args.num_classes:
        raise UserError(f"--dataset {args.dataset} needs --num-classes (shards carry no class list)")
    args.webdataset = True
    args.trainshards = pattern
    if getattr(args, "dataset_size", None) is None:
        args.dataset_size = samples


def shard_pattern(args: argparse.Namespace) -> tuple[str, int | None]:
    """(brace pattern of the training shards, samples per epoch or None) for --dataset wds/NAME: --trainshards,
    else timm's --train-split 'NAME-{0000..0099}.tar|SAMPLES' under DIR, else the SHARDS-*.tar fdsl wrote in DIR."""
    if getattr(args, "trainshards", None):
        return args.trainshards, None
    split, _, samples = args.train_split.partition("|")
    if ".tar" in split or ".." in split:
        if samples and not samples.strip().isdigit():
            raise UserError(f"--train-split {args.train_split}: the part after | is the sample count (a number)")
        remote = "://" in split or split.startswith("pipe:") or os.path.isabs(split)
        pattern = split if remote or not args.data_dir else os.path.join(args.data_dir, split)
        return pattern, int(samples) if samples else None
    if args.data_dir and os.path.isdir(args.data_dir):
        found = fdsl_shards(args.data_dir)
        if found:
            return found, None
    raise UserError(f"--dataset {args.dataset}: name the shards, e.g. DIR --train-split "
                    f"'NAME-{{000000..000099}}.tar' (timm's form) or --trainshards '/P/SHARDS-{{000000..000099}}.tar'"
                    f"; DIR {args.data_dir or '(not given)'} holds no SHARDS-*.tar written by fdsl render")


def fdsl_shards(folder: str) -> str | None:
    """The brace pattern of the SHARDS-NNNNNN.tar in ``folder`` (one unbroken run), or None when there are none."""
    numbers = sorted(int(m.group(1)) for m in map(FDSL_SHARD.match, os.listdir(folder)) if m)
    if not numbers:
        return None
    first, last = numbers[0], numbers[-1]
    if len(numbers) != last - first + 1:
        missing = sorted(set(range(first, last + 1)) - set(numbers))
        raise UserError(f"{folder} lacks {len(missing)} shard(s) between SHARDS-{first:06d}.tar and "
                        f"SHARDS-{last:06d}.tar (first missing: SHARDS-{missing[0]:06d}.tar); finish the build "
                        f"(re-run its fdsl render command) or name the shards with --train-split")
    return os.path.join(folder, f"SHARDS-{{{first:06d}..{last:06d}}}.tar")


def check_device(name: str | None) -> None:
    """--device: cpu, cuda[:N] or mps, where this torch and machine have it; one clear line otherwise."""
    if not name:
        return
    import torch

    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise UserError(f"--device {name}: not a device; use cpu, cuda, cuda:N or mps") from None
    if kind == "mps" and not mps_available():
        raise UserError("--device mps: this torch or machine has no MPS (Apple-silicon GPU) backend "
                        "(torch.backends.mps.is_available() is False); use --device cpu, or cuda on a GPU machine")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible to this process; use --device cpu"
                        + (" or mps" if mps_available() else ""))
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: fdsl trains on cpu, cuda or mps")


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
