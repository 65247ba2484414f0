"""Flags and run wrapper shared by the DeeperCluster family of commands (deepercluster, eval-linear, eval-voc,
eval-pretrain): the published boolean syntax, the launcher flags kept for their command lines, and one
process-group set-up with the one-line errors of the engine."""
from __future__ import annotations

import argparse

TRUE = ("on", "true", "1", "yes", "y", "t")
FALSE = ("off", "false", "0", "no", "n", "f")


def bool_flag(text: str) -> bool:
    """The published flags' booleans: on/off, true/false, 1/0 (and yes/no)."""
    value = str(text).strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r} (use on/off, true/false or 1/0)")


def add_launcher_flags(p: argparse.ArgumentParser) -> None:
    """The published --rank/--world-size/--dist-url/... flags are accepted; the process group comes from the
    launcher's variables (torchrun, mpirun, srun), whichever is used."""
    g = p.add_argument_group("distributed (set by the launcher: torchrun, mpirun or srun)")
    g.add_argument("--rank", type=int, default=0, help="ignored: read from RANK / OMPI_COMM_WORLD_RANK / SLURM_PROCID")
    g.add_argument("--local_rank", "--local-rank", type=int, default=-1, help="ignored (launcher compatibility)")
    g.add_argument("--world-size", "--world_size", type=int, default=1, help="ignored: read from the launcher")
    g.add_argument("--dist-url", "--dist_url", default="", help="ignored: MASTER_ADDR/MASTER_PORT are used")
    g.add_argument("--debug_slurm", type=bool_flag, default=False, help="ignored (published SLURM debugging)")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    g.add_argument("--dist-backend", "--dist_backend", default="nccl", help="backend on GPU (gloo on CPU)")
    g.add_argument("--dist-timeout", "--dist_timeout", type=float, default=600.0, help="seconds to wait for peers")


def run_distributed(args, body) -> int:
    """body(args, info) in the process group (engine.distributed.run: one-line errors for failed peers)."""
    from fdsl.engine import distributed

    return distributed.run(lambda info: body(args, info), args.device, args.dist_backend, args.dist_timeout)


def add_run_flags(p: argparse.ArgumentParser, log_interval: int = 100) -> None:
    """fdsl's additions common to these commands: resume, pauses, AMP, logging."""
    g = p.add_argument_group("fdsl additions")
    g.add_argument("--resume", default="auto", help="'auto' continues <dump_path>/last.pth.tar when present (as "
                                                   "published), '' starts afresh, or a checkpoint path")
    g.add_argument("--seed", type=int, default=0, help="seed of the data order and augmentation")
    g.add_argument("--amp", type=bool_flag, default=False, help="mixed precision on GPU")
    g.add_argument("--amp_dtype", default="bfloat16", choices=["float16", "bfloat16"])
    g.add_argument("--log_interval", type=int, default=log_interval, help="iterations between log lines")
    g.add_argument("--pause", type=int, default=None, help="stop after N epochs of this invocation (resumable)")
    g.add_argument("--pause_updates", type=int, default=None, help="stop after N optimiser steps (resumable)")
    g.add_argument("--save_every", type=int, default=1000,
                   help="also write last.pth.tar every N iterations (mid-epoch resume point; 0 = epoch ends only)")
    g.add_argument("--log_wandb", type=bool_flag, default=False, help="log to wandb (offline by default)")
    g.add_argument("--log_tensorboard", type=bool_flag, default=False)
    g.add_argument("--project_name", default="fdsl")
    g.add_argument("--group_name", default=None)
    g.add_argument("--entity_name", default="YOUR_WANDB_ENV")
