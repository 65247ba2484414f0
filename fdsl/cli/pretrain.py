"""`fdsl pretrain` / `python pretrain.py`: the published pretrain.py command line (spec 1.2)."""
from __future__ import annotations

import sys

from fdsl.cli import args as cli_args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from fdsl.engine import trainer

    return trainer.run(cli_args.parse("pretrain", argv))
