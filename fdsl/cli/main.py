"""`fdsl <command> ...`: one entry point; each command lives in its own module of fdsl.cli."""
from __future__ import annotations

import importlib
import sys

from fdsl.errors import UserError

# command -> (module with `main(argv) -> int`, one-line help)
COMMANDS = {
    "render": ("fdsl.cli.render", "build a formula-driven database (PNG folders or webdataset shards)"),
    "preview": ("fdsl.cli.preview", "write a contact sheet of a few classes of a built database"),
    "pretrain": ("fdsl.cli.pretrain", "pre-train a model (the papers' pretrain.py command line)"),
    "finetune": ("fdsl.cli.finetune", "fine-tune a model (finetune.py, argparse or hydra-style)"),
    "plot": ("fdsl.cli.plot", "draw loss/accuracy curves of a run directory to PNG"),
    "deepercluster": ("fdsl.cli.deepercluster", "DeeperCluster / DeepCluster / RotNet pre-training (main.py flags)"),
    "deepercluster-convert": ("fdsl.cli.deepercluster_convert", "an fdsl DeeperCluster checkpoint to the published layout"),
    "eval-linear": ("fdsl.cli.eval_linear", "linear probe on frozen conv1..conv13 features (top-1, VOC mAP), k-NN"),
    "eval-voc": ("fdsl.cli.eval_voc", "Pascal VOC07 classification transfer, fc6-8 or all layers (mAP)"),
    "eval-pretrain": ("fdsl.cli.eval_pretrain", "supervised training initialised from unsupervised VGG16 weights"),
    "hpt": ("fdsl.cli.hpt", "hierarchical pre-training: MoCo v2/BYOL from a base, linear/fine-tune evals, runner"),
    "mean-std": ("fdsl.cli.mean_std", "per-channel pixel mean/std of an image folder (for normalisation)"),
    "data": ("fdsl.cli.data", "downstream data sets: `fdsl data prepare` writes MNIST, CIFAR, ... as image folders"),
    "export": ("fdsl.cli.export", "a checkpoint (fdsl's or a released one) to timm / Hugging Face: safetensors, config, card"),
    "study": ("fdsl.cli.study", "a study: sources x downstream sets x seeds, resumable runs, a transfer-table report"),
    "evaluate": ("fdsl.cli.evaluate", "top-1/top-5, per-class accuracy and a confusion matrix of a checkpoint on a folder"),
}


def usage() -> str:
    lines = ["usage: fdsl <command> [options]   (fdsl <command> --help for each)", "", "commands:"]
    width = max(map(len, COMMANDS)) + 2
    lines += [f"  {name:<{width}}{text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from fdsl import __version__

        print(f"fdsl {__version__}")
        return 0
    command = argv.pop(0)
    if command not in COMMANDS:
        print(f"fdsl: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return int(module.main(argv) or 0)
    except UserError as err:
        print(f"fdsl {command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fdsl {command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
