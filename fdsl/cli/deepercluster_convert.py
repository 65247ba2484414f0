"""`fdsl deepercluster-convert CKPT OUT_DIR`: an fdsl DeeperCluster checkpoint (VGG16 trunk) to the published
layout (checkpoint.pth.tar with module.* keys and pred_layer_state_dict, <g>-pred_layer.pth.tar per sub-class
head), which the published eval_linear.py, eval_voc_classif.py, eval_pretrain.py and main.py read. Runs of
`fdsl deepercluster` write these files themselves (--published_checkpoint true); this converts older ones.
"""
from __future__ import annotations

import sys

from fdsl.cli.common import HelpFormatter, Parser


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="fdsl deepercluster-convert", formatter_class=HelpFormatter, description=__doc__)
    p.add_argument("checkpoint", help="fdsl checkpoint (last.pth.tar, checkpoint-<e>.pth.tar, ...)")
    p.add_argument("out_dir", help="folder for checkpoint.pth.tar and <g>-pred_layer.pth.tar")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    from fdsl.ssl.published_ckpt import convert_fdsl_checkpoint

    heads = convert_fdsl_checkpoint(args.checkpoint, args.out_dir)
    print(f"wrote {args.out_dir}/checkpoint.pth.tar and {heads} sub-class head files (0..{heads - 1}-pred_layer.pth.tar)")
    return 0
