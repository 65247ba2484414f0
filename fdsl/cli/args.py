"""The published pretrain.py / finetune.py flag table plus fdsl's additions.

Names, types and defaults follow the published parsers; where the published behaviour is a defect the fix is
noted next to the flag and in docs/training.md ("Published defects fixed", D1-D23).
"""
from __future__ import annotations

import argparse
import difflib
import os

import yaml

from fdsl.cli import timm_flags
from fdsl.cli.common import Parser
from fdsl.errors import UserError

# Spellings the published READMEs use that their parser rejected (docs/training.md, D3); both are accepted.
ALIASES = {"--interval_saved_epochs": "--interval-saved-epochs", "--dataset-size": "--dataset_size"}


def _add_dataset_model(p: argparse.ArgumentParser, finetune: bool) -> None:
    g = p.add_argument_group("dataset / model")
    g.add_argument("data_dir", metavar="DIR", nargs="?", default=None,
                   help="dataset root (train/ and val/ or validation/ are searched; not read with -w or --synthetic)")
    g.add_argument("--dataset", "-d", default="", metavar="FORM",
                   help="timm's reader name: '' (default), folder or ImageFolder = image folder DIR; wds/NAME = "
                        "webdataset shards: DIR + --train-split 'NAME-{0000..0099}.tar[|SAMPLES]', or the "
                        "SHARDS-*.tar fdsl wrote in DIR; torch/, hfds/, tfds/ are refused (export to a folder)")
    g.add_argument("--train-split", default="train",
                   help="training subfolder searched under DIR (with --dataset wds/NAME: the shard pattern)")
    g.add_argument("--val-split", default="validation", help="validation subfolder (val/ is also tried)")
    g.add_argument("--model", default="deit_tiny_patch16_224", help="timm model name")
    g.add_argument("--pretrained", action="store_true", help="timm weights from the local cache (never downloaded)")
    g.add_argument("--resume", default="", help="checkpoint to resume from, or 'auto' for <output>/<experiment>/last.pth.tar")
    g.add_argument("--no-resume-opt", action="store_true", help="on resume, do not restore optimizer/scaler state")
    g.add_argument("--num-classes", type=int, default=None, help="head size (default: classes found in the data)")
    g.add_argument("--img-size", type=int, default=None, help="input image side (also passed to the model)")
    g.add_argument("--input-size", type=int, nargs=3, default=None, metavar="N", help="C H W input size")
    g.add_argument("--mean", type=float, nargs="+", default=None, metavar="MEAN")
    g.add_argument("--std", type=float, nargs="+", default=None, metavar="STD")
    g.add_argument("--interpolation", default="", help="eval resize interpolation (model default otherwise)")
    g.add_argument("-b", "--batch-size", type=int, default=32, help="batch size PER PROCESS (global = b x world)")
    if finetune:
        g.add_argument("--pretrained-path", "--initial-checkpoint", dest="pretrained_path", default="",
                       help="checkpoint to initialise from (fdsl, published or state dict); --initial-checkpoint "
                            "is timm's name for it")
        g.add_argument("--crop-pct", type=float, default=None, help="eval center-crop fraction")
        g.add_argument("-vb", "--validation-batch-size-multiplier", type=int, default=1, help="eval batch = vb x b")
    else:
        g = p.add_argument_group("webdataset")
        g.add_argument("-w", "--webdataset", action="store_true", help="read .tar shards (<key>.png + <key>.cls)")
        g.add_argument("--trainshards", default=None, help="brace pattern, e.g. /P/SHARDS-{000000..000099}.tar")
        g.add_argument("--dataset_size", type=int, default=None,
                       help="samples per epoch (also --dataset-size); default num_classes x 1000 (x 2000 with _2ki)")


def _add_optimizer_schedule(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimizer")
    g.add_argument("--opt", default="sgd", help="timm optimizer ('sgd' is Nesterov SGD, 'momentum' plain)")
    g.add_argument("--opt-eps", type=float, default=None)
    g.add_argument("--opt-betas", type=float, nargs="+", default=None)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--clip-grad", type=float, default=None, help="gradient clipping value (off by default)")
    g.add_argument("--clip-mode", default="norm", choices=["norm", "value", "agc"])
    g = p.add_argument_group("learning-rate schedule")
    g.add_argument("--sched", default="step", help="cosine, tanh, step, plateau, cosine_iter, linear, linear_iter, none")
    g.add_argument("--lr", type=float, default=0.01, help="peak LR (not scaled by batch size)")
    g.add_argument("--lr-noise", type=float, nargs="+", default=None)
    g.add_argument("--lr-noise-pct", type=float, default=0.67)
    g.add_argument("--lr-noise-std", type=float, default=1.0)
    g.add_argument("--lr-cycle-mul", type=float, default=1.0)
    g.add_argument("--lr-cycle-limit", type=int, default=1)
    g.add_argument("--warmup-lr", type=float, default=1e-4)
    g.add_argument("--min-lr", type=float, default=1e-5)
    g.add_argument("--epochs", type=int, default=200)
    g.add_argument("--epoch-repeats", type=float, default=0.0, help="accepted, ignored (as published for folders)")
    g.add_argument("--start-epoch", type=int, default=None)
    g.add_argument("--decay-epochs", type=float, default=30)
    g.add_argument("--warmup-epochs", type=int, default=3)
    g.add_argument("--warmup-iter", type=int, default=0, help="warmup iterations for *_iter schedules (replaces epochs)")
    g.add_argument("--cooldown-epochs", type=int, default=0)
    g.add_argument("--patience-epochs", type=int, default=10)
    g.add_argument("--decay-rate", "--dr", type=float, default=0.1)


def _add_augmentation(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation / regularisation")
    g.add_argument("--no-aug", action="store_true")
    g.add_argument("--scale", type=float, nargs="+", default=[0.08, 1.0])
    g.add_argument("--ratio", type=float, nargs="+", default=[3.0 / 4.0, 4.0 / 3.0])
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--vflip", type=float, default=0.0)
    g.add_argument("--color-jitter", type=float, default=0.4, help="ignored when --aa is set")
    g.add_argument("--aa", default=None, help="AutoAugment/RandAugment spec, e.g. rand-m9-mstd0.5-inc1")
    g.add_argument("--aug-splits", type=int, default=0,
                   help="AugMix: N views per image (clean + N-1 augmented), batched as N x --batch-size; 0 or >= 2")
    g.add_argument("--jsd", action="store_true", help="Jensen-Shannon + cross-entropy loss over the splits")
    g.add_argument("--reprob", type=float, default=0.0)
    g.add_argument("--remode", default="const")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--resplit", action="store_true")
    g.add_argument("--mixup", type=float, default=0.0)
    g.add_argument("--cutmix", type=float, default=0.0)
    g.add_argument("--cutmix-minmax", type=float, nargs="+", default=None)
    g.add_argument("--mixup-prob", type=float, default=1.0)
    g.add_argument("--mixup-switch-prob", type=float, default=0.5)
    g.add_argument("--mixup-mode", default="batch")
    g.add_argument("--mixup-off-epoch", type=int, default=0)
    g.add_argument("--smoothing", type=float, default=0.1)
    g.add_argument("--train-interpolation", default="random")
    g.add_argument("--drop", type=float, default=0.0)
    g.add_argument("--drop-connect", type=float, default=None, help="deprecated alias of --drop-path")
    g.add_argument("--drop-path", type=float, default=None)
    g.add_argument("--drop-block", type=float, default=None)
    g.add_argument("--repeated-aug", action="store_true", help="3x repeated-augmentation sampler (also on one process)")


def _add_misc(p: argparse.ArgumentParser, finetune: bool) -> None:
    g = p.add_argument_group("misc / infrastructure")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--dist-backend", default="nccl", help="used on CUDA; CPU runs always use gloo")
    g.add_argument("--log-interval", type=int, default=50)
    g.add_argument("--recovery-interval", type=int, default=0,
                   help="also write recovery-<epoch>-<step>.pth.tar every N batches (--resume it to continue mid-epoch)")
    g.add_argument("--checkpoint-hist", type=int, default=10)
    g.add_argument("--interval-saved-epochs", type=int, default=None,
                   help="keep held-checkpoint-<epoch>.pth.tar every K epochs (also --interval_saved_epochs)")
    g.add_argument("-j", "--workers", type=int, default=4, help="DataLoader worker processes per rank")
    g.add_argument("--save-images", action="store_true")
    g.add_argument("--amp", action="store_true", help="mixed precision: float16 with a GradScaler on CUDA "
                   "(float32 on CPU), or bfloat16 (--amp-dtype bfloat16) on CUDA and CPU")
    g.add_argument("--apex-amp", action="store_true", help="accepted; native AMP is used")
    g.add_argument("--native-amp", action="store_true")
    g.add_argument("--pin-mem", action="store_true")
    g.add_argument("--no-prefetcher", action="store_true", help="accepted; fdsl needs no CUDA prefetcher")
    g.add_argument("--output", default="./output", help="output root (default ./output)")
    g.add_argument("--experiment", default="", help="run subfolder (default: <date>-<model>-<size>)")
    g.add_argument("--eval-metric", default="top1" if finetune else "loss",
                   help="checkpoint ranking metric (top1 for finetune; pretrain has only loss)")
    if finetune:
        g.add_argument("--eval-interval", type=int, default=1, metavar="N",
                       help="validate every N epochs and after the last (default 1); model_best is picked among "
                            "the validated epochs")
    g.add_argument("--log-wandb", action="store_true", help="log to wandb (offline unless WANDB_MODE is set)")
    g.add_argument("--project-name", default="YOUR_WANDB_PPOJECT_NAME")
    g.add_argument("--group-name", default="YOUR_WANDB_GROUP_NAME")
    g.add_argument("--entity-name", default="YOUR_WANDB_ENTITY_NAME")
    g.add_argument("--pause", type=int, default=None, help="stop after this many epochs from the start epoch")
    g.add_argument("--pause-updates", type=int, default=None,
                   help="stop after this many optimiser steps, saving a mid-epoch resume point in last.pth.tar")


def _add_fdsl(p: argparse.ArgumentParser, finetune: bool) -> None:
    g = p.add_argument_group("fdsl additions")
    g.add_argument("--config", default=None, help="YAML recipe (configs/); flags on the command line override it")
    g.add_argument("--model-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra timm model kwargs, e.g. patch_size=4 embed_dim=128 depth=4")
    g.add_argument("--amp-dtype", default="float16", choices=["float16", "bfloat16"])
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--torch-compile", action="store_true")
    g.add_argument("--sync-bn", action="store_true")
    g.add_argument("--split-bn", action="store_true", help="one BatchNorm per AugMix split (timm SplitBatchNorm2d)")
    g.add_argument("--model-ema", action="store_true", help="keep an EMA of the weights (state_dict_ema)")
    g.add_argument("--model-ema-decay", type=float, default=0.9998)
    g.add_argument("--dist-timeout", type=float, default=600.0, help="seconds before a stuck collective fails")
    g.add_argument("--lr-scale-batch", type=int, default=None,
                   help="scale lr, warmup-lr, min-lr by global batch / N (the hydra trainers use 512)")
    g.add_argument("--log-tensorboard", action="store_true")
    g.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or mps (Apple-silicon GPU, where torch has it); default: cuda when available")
    g.add_argument("--train-dir", default=None, help="explicit training folder (no split search)")
    g.add_argument("--val-dir", default=None, help="explicit validation folder")
    g.add_argument("--gpu-augment", action="store_true",
                   help="image folders: workers only read and decode (uint8); crop, flips, RandAugment/colour "
                        "jitter, normalisation and erasing run per sample on the training device")
    g.add_argument("--cache-images", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="decode the training folder once into shared memory, read by every worker (default auto: "
                        "when it needs at most a quarter of the available memory; bare flag = on)")
    g.add_argument("--strict-data", action="store_true",
                   help="an unreadable training image is an error (default: skipped with a warning)")
    if not finetune:
        g.add_argument("--synthetic", default=None, metavar="DB",
                       help="render database DB on the fly in the DataLoader workers (no files)")
        g.add_argument("--synthetic-instances", type=int, default=1000, help="images per class per epoch")
        g.add_argument("--synthetic-size", type=int, default=None, help="render size (default: input size)")
        g.add_argument("--synthetic-seed", type=int, default=0, help="database seed")
        g.add_argument("--synthetic-device", default=None, choices=["cpu", "cuda"],
                       help="render --synthetic batches on this device inside the training step, augmented per "
                            "sample there (no DataLoader workers; -j N processes compute the class parameters at "
                            "start-up); cuda = this rank's GPU")
        g.add_argument("--synthetic-opt", nargs="*", default=[], metavar="KEY=VALUE",
                       help="database options for --synthetic-device, as `fdsl render DB --help` names them, "
                            "e.g. iterations=50000 draw_type=point_gray")


def build_parser(kind: str, usage: str | None = None, description: str | None = None) -> Parser:
    """The parser (a bad flag is one line, as for every command); `usage` and `description` (its examples,
    printed first by --help) come from cli.pretrain and cli.finetune."""
    finetune = kind == "finetune"
    p = Parser(prog=f"fdsl {kind}", usage=usage,
               description=description or f"{kind} a timm model (published {kind}.py flags)",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_dataset_model(p, finetune)
    _add_optimizer_schedule(p)
    _add_augmentation(p)
    _add_misc(p, finetune)
    _add_fdsl(p, finetune)
    return p


def normalize_argv(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        out.append(ALIASES.get(name, name) + eq + value if name.startswith("--") else a)
    return out


def load_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """A YAML recipe: keys are flag dest names (dashes allowed); unknown keys are one clear error."""
    if not os.path.isfile(path):
        raise UserError(f"--config {path}: no such file")
    with open(path) as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise UserError(f"--config {path}: expected a mapping of flag: value")
    valid = {a.dest for a in parser._actions if a.dest != "help"}
    out = {}
    for key, value in recipe.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest not in valid:
            near = difflib.get_close_matches(dest, sorted(valid), n=3)
            raise UserError(f"--config {path}: unknown key {key!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
        out[dest] = value
    return out


def parse(kind: str, argv: list[str], usage: str | None = None, description: str | None = None) -> argparse.Namespace:
    parser = build_parser(kind, usage, description)
    argv = normalize_argv(argv)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**load_config(parser, pre.config))
    args = parser.parse_args(argv)
    args.kind = kind
    timm_flags.resolve_dataset(args)
    timm_flags.check_device(args.device)
    return args
