"""`fdsl finetune` / `python finetune.py`: the published argparse command line (spec 3), or the hydra-style
`key=value` command line of VisualAtom's finetune.py and 1p-frac's main.py (spec 4)."""
from __future__ import annotations

import sys

from fdsl.cli import args as cli_args
from fdsl.cli import hydra


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from fdsl.engine import trainer

    if hydra.is_hydra(argv):
        return trainer.run(hydra.to_args(argv))
    return trainer.run(cli_args.parse("finetune", argv))
