"""The epoch driver every trainer shares: resume, DDP wrapping, the epochs of the one loop, evaluation,
checkpoints, logs, and stopping cleanly (a pause, an iteration budget, a SLURM pre-emption signal).

A trainer (supervised pretrain/finetune in engine.trainer, the self-supervised methods in fdsl.ssl) builds
its data, its `Method`, optimiser and schedule, then calls `fit`. Resume is exact, also in the middle of an
epoch: batches come from a `Resumable` sampler (or a source with `skip`), every sample's augmentation is
seeded by its position, and each rank's RNG state is stored in the checkpoint.
"""
from __future__ import annotations

import inspect
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from fdsl.engine import checkpoint, distributed
from fdsl.engine.logging import Summary, Trackers, print0
from fdsl.engine.loop import LoopContext, NonFiniteLoss, train_one_epoch, updates_per_epoch
from fdsl.errors import UserError


class TrainingDiverged(UserError):
    pass


@dataclass
class RunConfig:
    """What the driver needs from any command line (each trainer fills it from its own flags)."""

    run_dir: str
    arch: str  # stored in checkpoints; names the model in a "does not fit" error
    args: dict = field(default_factory=dict)  # plain values, written to args.yaml and every checkpoint
    seed: int = 0
    epochs: int = 1
    start_epoch: int | None = None  # --start-epoch: override the resumed epoch
    max_updates: int | None = None  # an iteration budget in optimiser steps; the run ends there
    accum_steps: int = 1
    resume: str = ""  # "", "auto" (<run_dir>/last.pth.tar if present) or a checkpoint path
    resume_optimizer: bool = True
    pause_epochs: int | None = None  # stop after this many epochs of this invocation (resume later)
    pause_updates: int | None = None  # stop after this many optimiser steps of this invocation
    save_every_updates: int = 0  # also write last.pth.tar every N optimiser steps (mid-epoch resume point)
    recovery_interval: int = 0  # timm's recovery-<epoch>-<step>.pth.tar every N micro-batches
    checkpoint_hist: int = 10
    held_interval: int | None = None  # --interval-saved-epochs: keep held-checkpoint-<epoch>.pth.tar
    higher_is_better: bool = False  # of the metric that picks model_best
    eval_interval: int = 1  # evaluate every N epochs and after the last one
    log_interval: int = 50
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    clip_grad: float | None = None
    clip_mode: str = "norm"
    channels_last: bool = False
    sync_bn: bool = False
    torch_compile: bool = False
    ema_decay: float | None = None  # model EMA (timm ModelEmaV3) of method.module
    save_images: bool = False
    trackers_args: object = None  # the argparse namespace for wandb/TensorBoard (log_wandb, ...), or None
    describe: str = ""  # one line printed at the start (data, model, sizes)


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Every RNG is a function of (seed, rank, epoch), so a resumed run replays the same randomness."""
    value = (seed + rank) * 1_000_003 + epoch
    torch.manual_seed(value)
    np.random.seed(value % 2**32)
    random.seed(value)


def rng_state() -> dict:
    """This process's generators as plain values (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "random": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["random"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def all_rng_states(info) -> list | None:
    """Every rank's generators, on rank 0 (None elsewhere)."""
    mine = rng_state()
    if not info.distributed:
        return [mine]
    out = [None] * info.world_size if info.is_main else None
    torch.distributed.gather_object(mine, out, dst=0)
    return out


class StopSignal:
    """SIGUSR1 (SLURM's warning before pre-emption) and SIGTERM ask the run to stop after the current step,
    write a resumable checkpoint and, under SLURM, requeue the job."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def install(self) -> None:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def requested(self, info, sync: bool) -> bool:
        """Whether to stop now; with several ranks all agree (an all-reduce, only when `sync`)."""
        if not info.distributed:
            return self.received is not None
        if not sync:
            return False
        flag = torch.tensor(1.0 if self.received is not None else 0.0, device=info.device)
        return distributed.all_reduce_sum(flag, info).item() > 0


def find_resume(cfg: RunConfig) -> str | None:
    if cfg.resume == "auto":
        path = os.path.join(cfg.run_dir, "last.pth.tar")
        return path if os.path.isfile(path) else None
    if cfg.resume and not os.path.isfile(cfg.resume):
        raise UserError(f"--resume {cfg.resume}: no such file")
    if not cfg.resume and os.path.isfile(os.path.join(cfg.run_dir, "last.pth.tar")):
        raise UserError(f"{cfg.run_dir} already holds a run (last.pth.tar); pass --resume auto to continue it, "
                        "or choose another --experiment/--output")
    return cfg.resume or None


def load_resume(cfg: RunConfig, path: str, method, optimizer, sched, saver, info) -> dict:
    """Restore weights, optimiser, scaler, schedule, saver and method state; return the checkpoint."""
    ckpt = checkpoint.load(path)
    sd = checkpoint.unwrap_state_dict(ckpt)
    try:
        method.module.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        arch = ckpt.get("arch", "another architecture") if isinstance(ckpt, dict) else "another architecture"
        raise UserError(f"--resume {path} holds {arch} weights that do not fit {cfg.arch} "
                        f"({str(err).splitlines()[0][:120]})") from None
    ckpt = ckpt if isinstance(ckpt, dict) else {}
    if cfg.resume_optimizer:
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        if cfg.scaler is not None and "amp_scaler" in ckpt:
            cfg.scaler.load_state_dict(ckpt["amp_scaler"])
    saver.load_state_dict(ckpt.get("saver"))
    method.load_state_dict(ckpt.get("method") or {})
    where = ckpt.get("resume_at")
    print0(info, f"resumed from {path} (" + (f"epoch {where[0]} step {where[1]}" if where else
                                              f"end of epoch {ckpt.get('epoch')}") + ")")
    return ckpt


def wrap(method, cfg: RunConfig, info):
    """method.module on the device, SyncBN/DDP/compile as asked; returns the module the loop calls."""
    module = method.module
    trainable = any(p.requires_grad for p in module.parameters())
    if info.distributed and trainable:
        if cfg.sync_bn and info.device.type == "cuda":  # SyncBatchNorm runs on CUDA only
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
            method.module = module
        device_ids = [info.device.index] if info.device.type == "cuda" else None
        options = {"find_unused_parameters": getattr(method, "find_unused_parameters", False)}
        if not getattr(method, "broadcast_buffers", True):  # torch >= 2.14 names it forward_sync_buffers
            new_name = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            options["forward_sync_buffers" if new_name else "broadcast_buffers"] = False
        module = DistributedDataParallel(module, device_ids=device_ids, **options)
    if cfg.torch_compile:
        module = torch.compile(module)
    return module


def skip_batches(loader, batches: int, info) -> None:
    if batches <= 0:
        return
    if not hasattr(loader, "skip"):
        raise UserError("this data source cannot resume in the middle of an epoch; resume from an epoch-end "
                        "checkpoint (last.pth.tar written at the end of an epoch)")
    loader.skip(batches)


def fit(cfg: RunConfig, info, method, data, loader, optimizer, sched, evaluate=None) -> dict:
    """Train `method` over `loader` for cfg.epochs (or cfg.max_updates optimiser steps). `data` is told the
    epoch (set_epoch) and may report unreadable files (take_bad_files); `evaluate(epoch)` returns metrics
    for the epoch's row and the checkpoint choice. Returns the last epoch's row."""
    method.module.to(info.device)
    if cfg.channels_last:
        method.module.to(memory_format=torch.channels_last)
    steps = len(loader)
    per_epoch = updates_per_epoch(steps, cfg.accum_steps)
    epochs = cfg.epochs if cfg.max_updates is None else -(-cfg.max_updates // per_epoch)
    saver = checkpoint.CheckpointSaver(cfg.run_dir, cfg.higher_is_better, cfg.checkpoint_hist, cfg.held_interval)
    path = find_resume(cfg)
    resumed = load_resume(cfg, path, method, optimizer, sched, saver, info) if path else {}
    done = resumed.get("epoch")
    start_epoch, start_step = resumed.get("resume_at") or [(done if done is not None else -1) + 1, 0]
    if cfg.start_epoch is not None:
        start_epoch, start_step = cfg.start_epoch, 0
    rngs = resumed.get("rng") if start_step else None
    if rngs is not None and len(rngs) != info.world_size:
        print0(info, f"note: the checkpoint was written by {len(rngs)} process(es), this run has {info.world_size}: "
                     "the data order resumes exactly, random augmentation and dropout do not")
        rngs = None

    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(method.module, decay=cfg.ema_decay)
        if "state_dict_ema" in resumed:
            ema.module.load_state_dict(resumed["state_dict_ema"])
    model = wrap(method, cfg, info)
    sched.fast_forward(start_epoch, start_epoch * per_epoch + -(-start_step // cfg.accum_steps))
    if cfg.resume_optimizer:  # the LR it acts on lives in the optimizer state
        sched.load_state_dict(resumed.get("scheduler"))

    summary = trackers = None
    done_epoch = resumed.get("epoch") if path else None
    if info.is_main:
        os.makedirs(cfg.run_dir, exist_ok=True)
        with open(os.path.join(cfg.run_dir, "args.yaml"), "w") as f:
            yaml.safe_dump(cfg.args, f, sort_keys=False)
        summary = Summary(os.path.join(cfg.run_dir, "summary.csv"), done_epoch if path else None)
        trackers = Trackers(cfg.trackers_args, cfg.run_dir, info) if cfg.trackers_args is not None else None
    budget = f" max-updates={cfg.max_updates}" if cfg.max_updates is not None else ""
    print0(info, f"{cfg.describe} world={info.world_size} ({info.launcher}, {info.device}) iters/epoch={steps}"
                 f"{' accum=' + str(cfg.accum_steps) if cfg.accum_steps > 1 else ''} "
                 f"epochs={start_epoch}..{epochs - 1}{budget} -> {cfg.run_dir}")

    def state(epoch: int | None, metric=None, resume_at=None) -> dict:
        out = {"arch": cfg.arch, "state_dict": method.module.state_dict(), "optimizer": optimizer.state_dict(),
               "version": checkpoint.VERSION, "args": cfg.args, "epoch": epoch}
        if metric is not None:
            out["metric"] = metric
        if cfg.scaler is not None:
            out["amp_scaler"] = cfg.scaler.state_dict()
        if ema is not None:
            out["state_dict_ema"] = ema.module.state_dict()
        if (sched_state := sched.state_dict()) is not None:
            out["scheduler"] = sched_state
        if method_state := method.state_dict():
            out["method"] = method_state
        if resume_at is not None:
            out["resume_at"] = list(resume_at)
        return out

    stop = StopSignal()
    stopped_by: list[str] = []
    invocation_start = {"updates": None}

    def mid_epoch_save(epoch: int, step: int, name: str | None) -> None:
        rng = all_rng_states(info)  # a collective: every rank calls it
        if info.is_main:
            ckpt = dict(state(epoch - 1 if epoch > 0 else None, resume_at=(epoch, step)), rng=rng)
            ckpt["saver"] = saver.state_dict()
            if name is None:
                checkpoint.save_atomic(ckpt, saver.path("last.pth.tar"))
            else:
                saver.save_recovery(ckpt, epoch, step - 1)

    def on_update(epoch: int, step: int, num_updates: int) -> bool:
        if invocation_start["updates"] is None:
            invocation_start["updates"] = num_updates - 1
        at_log = (step - 1) % ctx.log_interval < cfg.accum_steps
        if cfg.recovery_interval and step % cfg.recovery_interval == 0 and step < steps:
            mid_epoch_save(epoch, step, "recovery")
        halt = None
        if stop.requested(info, sync=at_log):
            halt = f"signal {signal.Signals(stop.received).name if stop.received else 'on another rank'}"
        elif cfg.pause_updates and num_updates - invocation_start["updates"] >= cfg.pause_updates:
            halt = f"--pause-updates {cfg.pause_updates}"
        periodic = cfg.save_every_updates and num_updates % cfg.save_every_updates == 0
        if (halt or periodic) and step < steps:
            mid_epoch_save(epoch, step, None)
        if halt:
            stopped_by.append(halt)
        return halt is not None

    ctx = LoopContext(info=info, amp_dtype=cfg.amp_dtype, scaler=cfg.scaler, clip_grad=cfg.clip_grad,
                      clip_mode=cfg.clip_mode, accum_steps=cfg.accum_steps, max_updates=cfg.max_updates,
                      log_interval=max(1, cfg.log_interval), channels_last=cfg.channels_last, ema=ema,
                      trackers=trackers, on_update=on_update, epochs=epochs,
                      save_images_dir=cfg.run_dir if cfg.save_images else None)
    row: dict = {}
    stop.install()
    try:
        for epoch in range(start_epoch, epochs):
            seed_epoch(cfg.seed, info.rank, epoch)
            data.set_epoch(epoch)
            method.before_epoch(epoch, ctx)
            skip = start_step if epoch == start_epoch else 0
            skip_batches(loader, skip, info)
            if skip and rngs is not None:
                ctx.extra["restore_rng"] = rngs[info.rank]
            result = train_one_epoch(method, model, ResumeRng(loader, ctx), optimizer, sched, ctx, epoch, skip)
            report_bad_files(data, info, epoch)
            if result["stopped"] and result["steps"] < steps and stopped_by:  # resumable, saved in on_update
                print0(info, f"{stopped_by[0]}: stopped at epoch {epoch} step {result['steps']}/{steps}; "
                             f"resume with --resume auto ({saver.path('last.pth.tar')})")
                _requeue(stop, info)
                break
            row = {"epoch": epoch, "train_loss": result["loss"]}
            row.update({f"train_{k}": v for k, v in result.items() if k not in ("loss", "steps", "stopped")})
            metric = result["loss"]
            if evaluate is not None:
                if evaluating(epoch, epochs, result["stopped"], cfg.eval_interval):
                    metrics = evaluate(epoch)
                    row.update({f"eval_{k}": v for k, v in metrics.items() if k != "metric"})
                    metric = metrics.get("metric", metric)
                else:  # no validation this epoch: last.pth.tar is written, model_best is not ranked
                    metric = None
            row.update(method.after_epoch(epoch, ctx))
            sched.after_epoch(epoch, metric)
            if info.is_main:  # an epoch, or the part of it that the iteration budget allowed
                summary.append(row)
                if trackers is not None:
                    trackers.log(dict(row), step=(epoch + 1) * per_epoch)
                saver.save(state(epoch), epoch, metric)
            if result["stopped"]:
                if stopped_by:
                    print0(info, f"{stopped_by[0]}: stopped after epoch {epoch}; resume with --resume auto")
                    _requeue(stop, info)
                break
            if cfg.pause_epochs is not None and epoch - start_epoch + 1 >= cfg.pause_epochs:
                print0(info, f"--pause {cfg.pause_epochs}: stopping after epoch {epoch}")
                break
    except NonFiniteLoss as err:
        last = os.path.join(cfg.run_dir, "last.pth.tar")
        kept = f"last good checkpoint kept: {last}" if os.path.isfile(last) else "no checkpoint was written yet"
        raise TrainingDiverged(f"{err}; stopping ({kept}); lower --lr or set --clip-grad") from None
    finally:
        stop.restore()
        if trackers is not None:
            trackers.close()
    if info.is_main and saver.best is not None and evaluate is not None:
        print0(info, f"done: best metric {saver.best[1]:.4f} at epoch {saver.best[0]}; {cfg.run_dir}")
    sys.stdout.flush()
    return row


def evaluating(epoch: int, epochs: int, stopped: bool, interval: int = 1) -> bool:
    return stopped or epoch == epochs - 1 or (epoch + 1) % max(1, interval) == 0


class ResumeRng:
    """The loader, whose iterator is created first and then the resumed RNG state applied: creating the
    iterator draws from the generators exactly as in the run that was interrupted."""

    def __init__(self, loader, ctx: LoopContext):
        self.loader = loader
        self.ctx = ctx

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        iterator = iter(self.loader)
        state = self.ctx.extra.pop("restore_rng", None)
        if state is not None:
            set_rng_state(state)
        yield from iterator


def report_bad_files(data, info, epoch: int) -> None:
    """One line per epoch with the number of unreadable images skipped on all ranks (each also warned)."""
    take = getattr(data, "take_bad_files", None)
    count, first = take() if take is not None else (0, "")
    total = int(distributed.all_reduce_sum(torch.tensor(count, device=info.device), info).item())
    if total:
        print0(info, f"warning: epoch {epoch}: skipped {total} unreadable image(s), e.g. {first or 'on another rank'}")


def _requeue(stop: StopSignal, info) -> None:
    """Under SLURM, a pre-empted job puts itself back in the queue (rank 0 only)."""
    job = os.environ.get("SLURM_JOB_ID")
    if stop.received == signal.SIGUSR1 and job and info.is_main:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
        print0(info, f"scontrol requeue {job}: " + ("done" if result.returncode == 0 else result.stderr.strip()))
