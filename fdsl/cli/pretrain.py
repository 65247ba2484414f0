"""`fdsl pretrain` / `python pretrain.py`: the published pretrain.py command line (spec 1.2)."""
from __future__ import annotations

import sys

from fdsl.cli import args as cli_args
from fdsl.cli import hydra


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from fdsl.engine import trainer

    if hydra.is_hydra(argv):  # 1p-frac's main.py pre-trains with mode=pretrain
        return trainer.run(hydra.to_args(argv))
    return trainer.run(cli_args.parse("pretrain", argv))
