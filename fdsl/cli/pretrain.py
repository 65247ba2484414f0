"""`fdsl pretrain` / `python pretrain.py`: the published pretrain.py command line (docs/training.md)."""
from __future__ import annotations

import sys

from fdsl.cli import args as cli_args
from fdsl.cli import hydra

USAGE = "fdsl pretrain [DIR] [options]   (or python pretrain.py ...; hydra-style key=value lines work too)"
EXAMPLES = """pre-train a timm model on a formula-driven database (the papers' pretrain.py flags, and timm's).

examples:
  fdsl pretrain data/RCDB-1k/image --config configs/pretrain_rcdb_1k.yaml --output ./output --experiment rcdb1k
  fdsl pretrain data/FractalDB-1k --model resnet50 --num-classes 1000 --epochs 90 -b 64 --opt sgd --lr 0.1
  fdsl pretrain data/RCDB-21k --dataset wds/rcdb --train-split 'SHARDS-{000000..020999}.tar' \\
      --num-classes 21000 --config configs/pretrain_rcdb_21k.yaml       # webdataset shards, timm's spelling
  fdsl pretrain --synthetic fractaldb --num-classes 1000 --synthetic-device cuda --config configs/pretrain_1pfrac.yaml
  torchrun --nproc_per_node 8 pretrain.py data/RCDB-1k/image --config configs/pretrain_rcdb_1k.yaml
  fdsl pretrain data/RCDB-1k/image --config configs/pretrain_rcdb_1k.yaml --experiment rcdb1k --resume auto
Flags after --config override the recipe; --batch-size is per process; --resume auto continues
<output>/<experiment>/last.pth.tar. Every flag below; the reference is docs/training.md."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if hydra.is_hydra(argv):  # 1p-frac's main.py pre-trains with mode=pretrain
        args = hydra.to_args(argv)
    else:
        args = cli_args.parse("pretrain", argv, USAGE, EXAMPLES)
    from fdsl.recipes import supervised  # after parsing: --help and a bad flag answer without importing torch

    return supervised.run(args)
