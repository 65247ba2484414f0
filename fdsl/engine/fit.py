"""The epoch driver every trainer shares: resume, DDP wrapping, the epochs of the one loop, evaluation,
checkpoints, logs, and stopping cleanly (a pause, an iteration budget, a SLURM pre-emption signal).

A recipe (fdsl.recipes: supervised pretrain/finetune, the self-supervised methods, the probes) builds its
data, its `Method`, optimiser and schedule, then calls `fit`. Resume is exact, also in the middle of an epoch:
batches come from a `Resumable` sampler (or a source with `skip`), every sample's augmentation is seeded by
its position, and each rank's RNG state is stored in the checkpoint.
"""
from __future__ import annotations

import inspect
import os
import sys
from dataclasses import dataclass, field

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from fdsl.engine import checkpoint, distributed
from fdsl.engine.logging import Summary, Trackers, print0
from fdsl.engine.loop import LoopContext, NonFiniteLoss, train_one_epoch, updates_per_epoch
from fdsl.engine.rng import ResumeRng, all_rng_states, seed_epoch
from fdsl.engine.stopping import StopSignal
from fdsl.errors import UserError

__all__ = ["RunConfig", "TrainingDiverged", "fit", "seed_epoch"]


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
    trackers_args: object = None  # wandb/TensorBoard (fdsl.engine.logging.TrackerSpec), or None
    describe: str = ""  # one line printed at the start (data, model, sizes)


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
    run = Run(cfg, info, method, data, loader, optimizer, sched, evaluate)
    run.place_model()
    run.resume()
    run.wrap()
    run.open_logs()
    run.stop.install()
    try:
        row = run.train_epochs()
    except NonFiniteLoss as err:
        raise run.diverged(err) from None
    finally:
        run.stop.restore()
        run.close_logs()
    run.report_best()
    return row


class Run:
    """One call of `fit`: what its steps share. Each method is one step of `fit`, in the order it calls them."""

    def __init__(self, cfg: RunConfig, info, method, data, loader, optimizer, sched, evaluate):
        self.cfg, self.info, self.method, self.data = cfg, info, method, data
        self.loader, self.optimizer, self.sched, self.evaluate = loader, optimizer, sched, evaluate
        self.steps = len(loader)
        self.per_epoch = updates_per_epoch(self.steps, cfg.accum_steps)
        self.epochs = cfg.epochs if cfg.max_updates is None else -(-cfg.max_updates // self.per_epoch)
        self.saver = checkpoint.CheckpointSaver(cfg.run_dir, cfg.higher_is_better, cfg.checkpoint_hist,
                                                cfg.held_interval)
        self.stop = StopSignal()
        self.stopped_by: list[str] = []  # why the run stopped early (a signal, --pause-updates)
        self.first_update: int | None = None  # optimiser steps done before this invocation
        self.resumed: dict = {}
        self.resume_path: str | None = None
        self.start_epoch, self.start_step = 0, 0
        self.rngs: list | None = None  # every rank's generators at a mid-epoch resume point
        self.ema = self.model = self.summary = self.trackers = self.ctx = None

    # --- set up -----------------------------------------------------------------------------------------
    def place_model(self) -> None:
        self.method.module.to(self.info.device)
        if self.cfg.channels_last:
            self.method.module.to(memory_format=torch.channels_last)

    def resume(self) -> None:
        """Weights, optimiser and method state from the checkpoint; where in which epoch to start."""
        cfg, info = self.cfg, self.info
        self.resume_path = find_resume(cfg)
        if self.resume_path:
            self.resumed = load_resume(cfg, self.resume_path, self.method, self.optimizer, self.sched, self.saver,
                                       info)
        done = self.resumed.get("epoch")
        self.start_epoch, self.start_step = self.resumed.get("resume_at") or [(done if done is not None else -1) + 1, 0]
        if cfg.start_epoch is not None:
            self.start_epoch, self.start_step = cfg.start_epoch, 0
        rngs = self.resumed.get("rng") if self.start_step else None
        if rngs is not None and len(rngs) != info.world_size:
            print0(info, f"note: the checkpoint was written by {len(rngs)} process(es), this run has "
                         f"{info.world_size}: the data order resumes exactly, random augmentation and dropout do not")
            rngs = None
        self.rngs = rngs
        if cfg.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.method.module, decay=cfg.ema_decay)
            if "state_dict_ema" in self.resumed:
                self.ema.module.load_state_dict(self.resumed["state_dict_ema"])

    def wrap(self) -> None:
        """The module the loop calls (DDP, SyncBN, compile), and the schedule moved to the start point."""
        cfg = self.cfg
        self.model = wrap(self.method, cfg, self.info)
        self.sched.fast_forward(self.start_epoch,
                                self.start_epoch * self.per_epoch + -(-self.start_step // cfg.accum_steps))
        if cfg.resume_optimizer:  # the LR it acts on lives in the optimizer state
            self.sched.load_state_dict(self.resumed.get("scheduler"))

    def open_logs(self) -> None:
        """args.yaml, summary.csv and the trackers (rank 0), the start line, and the loop's context."""
        cfg, info = self.cfg, self.info
        if info.is_main:
            os.makedirs(cfg.run_dir, exist_ok=True)
            with open(os.path.join(cfg.run_dir, "args.yaml"), "w") as f:
                yaml.safe_dump(cfg.args, f, sort_keys=False)
            self.summary = Summary(os.path.join(cfg.run_dir, "summary.csv"),
                                   self.resumed.get("epoch") if self.resume_path else None)
            self.trackers = Trackers(cfg.trackers_args, cfg.run_dir, info) if cfg.trackers_args is not None else None
        budget = f" max-updates={cfg.max_updates}" if cfg.max_updates is not None else ""
        accum = f" accum={cfg.accum_steps}" if cfg.accum_steps > 1 else ""
        print0(info, f"{cfg.describe} world={info.world_size} ({info.launcher}, {info.device}) "
                     f"iters/epoch={self.steps}{accum} epochs={self.start_epoch}..{self.epochs - 1}{budget} "
                     f"-> {cfg.run_dir}")
        self.ctx = LoopContext(info=info, amp_dtype=cfg.amp_dtype, scaler=cfg.scaler, clip_grad=cfg.clip_grad,
                               clip_mode=cfg.clip_mode, accum_steps=cfg.accum_steps, max_updates=cfg.max_updates,
                               log_interval=max(1, cfg.log_interval), channels_last=cfg.channels_last,
                               ema=self.ema, trackers=self.trackers, on_update=self.on_update, epochs=self.epochs,
                               save_images_dir=cfg.run_dir if cfg.save_images else None)

    # --- the epochs -------------------------------------------------------------------------------------
    def train_epochs(self) -> dict:
        row: dict = {}
        for epoch in range(self.start_epoch, self.epochs):
            result = self.train_epoch(epoch)
            if result["stopped"] and result["steps"] < self.steps and self.stopped_by:  # saved in on_update
                print0(self.info, f"{self.stopped_by[0]}: stopped at epoch {epoch} step {result['steps']}/"
                                  f"{self.steps}; resume with --resume auto ({self.saver.path('last.pth.tar')})")
                self.stop.requeue(self.info)
                break
            row = self.end_epoch(epoch, result)
            if result["stopped"]:
                if self.stopped_by:
                    print0(self.info, f"{self.stopped_by[0]}: stopped after epoch {epoch}; resume with --resume auto")
                    self.stop.requeue(self.info)
                break
            if self.cfg.pause_epochs is not None and epoch - self.start_epoch + 1 >= self.cfg.pause_epochs:
                print0(self.info, f"--pause {self.cfg.pause_epochs}: stopping after epoch {epoch}")
                break
        return row

    def train_epoch(self, epoch: int) -> dict:
        """Seed, tell the data and the method, skip what a mid-epoch resume already did, run the loop."""
        seed_epoch(self.cfg.seed, self.info.rank, epoch)
        self.data.set_epoch(epoch)
        self.method.before_epoch(epoch, self.ctx)
        skip = self.start_step if epoch == self.start_epoch else 0
        skip_batches(self.loader, skip, self.info)
        resumed_rng = self.rngs[self.info.rank] if skip and self.rngs is not None else None
        result = train_one_epoch(self.method, self.model, ResumeRng(self.loader, resumed_rng), self.optimizer,
                                 self.sched, self.ctx, epoch, skip)
        report_bad_files(self.data, self.info, epoch)
        return result

    def end_epoch(self, epoch: int, result: dict) -> dict:
        """Validate (when due), step the schedule, and log and checkpoint the epoch's row."""
        row = {"epoch": epoch, "train_loss": result["loss"]}
        row.update({f"train_{k}": v for k, v in result.items() if k not in ("loss", "steps", "stopped")})
        metric = result["loss"]
        if self.evaluate is not None:
            if evaluating(epoch, self.epochs, result["stopped"], self.cfg.eval_interval):
                metrics = self.evaluate(epoch)
                row.update({f"eval_{k}": v for k, v in metrics.items() if k != "metric"})
                metric = metrics.get("metric", metric)
            else:  # no validation this epoch: last.pth.tar is written, model_best is not ranked
                metric = None
        row.update(self.method.after_epoch(epoch, self.ctx))
        self.sched.after_epoch(epoch, metric)
        if self.info.is_main:  # an epoch, or the part of it that the iteration budget allowed
            self.summary.append(row)
            if self.trackers is not None:
                self.trackers.log(dict(row), step=(epoch + 1) * self.per_epoch)
            self.saver.save(self.state(epoch), epoch, metric)
        return row

    def on_update(self, epoch: int, step: int, num_updates: int) -> bool:
        """After every optimiser step: recovery and periodic checkpoints, and whether to stop now."""
        cfg = self.cfg
        if self.first_update is None:
            self.first_update = num_updates - 1
        if cfg.recovery_interval and step % cfg.recovery_interval == 0 and step < self.steps:
            self.save_mid_epoch(epoch, step, recovery=True)
        halt = None
        if self.stop.requested(self.info, sync=(step - 1) % self.ctx.log_interval < cfg.accum_steps):
            halt = self.stop.name()
        elif cfg.pause_updates and num_updates - self.first_update >= cfg.pause_updates:
            halt = f"--pause-updates {cfg.pause_updates}"
        periodic = cfg.save_every_updates and num_updates % cfg.save_every_updates == 0
        if (halt or periodic) and step < self.steps:
            self.save_mid_epoch(epoch, step, recovery=False)
        if halt:
            self.stopped_by.append(halt)
        return halt is not None

    # --- checkpoints ------------------------------------------------------------------------------------
    def state(self, epoch: int | None, resume_at=None) -> dict:
        """Everything a checkpoint holds: weights, optimiser, scaler, EMA, schedule, method state."""
        out = {"arch": self.cfg.arch, "state_dict": self.method.module.state_dict(),
               "optimizer": self.optimizer.state_dict(), "version": checkpoint.VERSION, "args": self.cfg.args,
               "epoch": epoch}
        if self.cfg.scaler is not None:
            out["amp_scaler"] = self.cfg.scaler.state_dict()
        if self.ema is not None:
            out["state_dict_ema"] = self.ema.module.state_dict()
        if (sched_state := self.sched.state_dict()) is not None:
            out["scheduler"] = sched_state
        if method_state := self.method.state_dict():
            out["method"] = method_state
        if resume_at is not None:
            out["resume_at"] = list(resume_at)
        return out

    def save_mid_epoch(self, epoch: int, step: int, recovery: bool) -> None:
        """last.pth.tar (or timm's recovery file) at (epoch, step), with every rank's generators."""
        rng = all_rng_states(self.info)  # a collective: every rank calls it
        if self.info.is_main:
            ckpt = dict(self.state(epoch - 1 if epoch > 0 else None, resume_at=(epoch, step)), rng=rng)
            ckpt["saver"] = self.saver.state_dict()
            if recovery:
                self.saver.save_recovery(ckpt, epoch, step - 1)
            else:
                checkpoint.save_atomic(ckpt, self.saver.path("last.pth.tar"))

    # --- the end ----------------------------------------------------------------------------------------
    def diverged(self, err: NonFiniteLoss) -> TrainingDiverged:
        last = os.path.join(self.cfg.run_dir, "last.pth.tar")
        kept = f"last good checkpoint kept: {last}" if os.path.isfile(last) else "no checkpoint was written yet"
        return TrainingDiverged(f"{err}; stopping ({kept}); lower --lr or set --clip-grad")

    def close_logs(self) -> None:
        if self.trackers is not None:
            self.trackers.close()

    def report_best(self) -> None:
        if self.info.is_main and self.saver.best is not None and self.evaluate is not None:
            print0(self.info, f"done: best metric {self.saver.best[1]:.4f} at epoch {self.saver.best[0]}; "
                              f"{self.cfg.run_dir}")
        sys.stdout.flush()


def evaluating(epoch: int, epochs: int, stopped: bool, interval: int = 1) -> bool:
    return stopped or epoch == epochs - 1 or (epoch + 1) % max(1, interval) == 0


def report_bad_files(data, info, epoch: int) -> None:
    """One line per epoch with the number of unreadable images skipped on all ranks (each also warned)."""
    take = getattr(data, "take_bad_files", None)
    count, first = take() if take is not None else (0, "")
    total = int(distributed.all_reduce_sum(torch.tensor(count, device=info.device), info).item())
    if total:
        print0(info, f"warning: epoch {epoch}: skipped {total} unreadable image(s), e.g. {first or 'on another rank'}")
