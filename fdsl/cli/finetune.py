"""`fdsl finetune` / `python finetune.py`: the published argparse command line, or the hydra-style
`key=value` command line of VisualAtom's finetune.py and 1p-frac's main.py (docs/training.md)."""
from __future__ import annotations

import sys

from fdsl.cli import args as cli_args
from fdsl.cli import hydra

USAGE = "fdsl finetune DIR [options]   (or python finetune.py ...; hydra-style key=value lines work too)"
EXAMPLES = """fine-tune a timm model on an image folder (DIR/train/<class>/, DIR/val/<class>/), from a checkpoint.

examples:
  fdsl finetune data/cifar10 --config configs/finetune_cifar10.yaml --pretrained-path output/rcdb1k/model_best.pth.tar
  fdsl finetune data/imagenet --model deit_base_patch16_224 --initial-checkpoint output/rcdb1k/model_best.pth.tar \\
      --num-classes 1000 --epochs 300 -b 64 --opt adamw --lr 1e-3 --sched cosine      # timm's flag names
  fdsl finetune --train-dir data/cars/train --val-dir data/cars/test --config configs/finetune_cifar10.yaml
  mpirun -npernode 4 -np 8 python finetune.py data/imagenet --config configs/finetune_imagenet.yaml \\
      --pretrained-path output/rcdb1k/model_best.pth.tar
  fdsl finetune data=colorimagefolder data.trainset.root=data/cifar10/train data.valset.root=data/cifar10/val \\
      data.baseinfo.num_classes=10 ckpt=output/rcdb1k/model_best.pth.tar model=vit mode=finetune output_dir=out
Flags after --config override the recipe; --batch-size is per process; --resume auto continues
<output>/<experiment>/last.pth.tar. Every flag below; the reference is docs/training.md."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if hydra.is_hydra(argv):
        args = hydra.to_args(argv)
    else:
        args = cli_args.parse("finetune", argv, USAGE, EXAMPLES)
    from fdsl.recipes import supervised  # after parsing: --help and a bad flag answer without importing torch

    return supervised.run(args)
