"""Metric output on rank 0: console lines, summary.csv, wandb (offline by default), TensorBoard (optional)."""
from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field


def print0(info, *args, **kwargs) -> None:
    if info.is_main:
        print(*args, **kwargs, flush=True)


def format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Summary:
    """summary.csv: one row per epoch. On resume, rows after the resumed epoch are dropped and the header is
    not repeated (published appended a second header, D11)."""

    def __init__(self, path: str, resume_epoch: int | None = None):
        self.path = path
        self.rows: list[dict] = []
        if resume_epoch is not None and os.path.isfile(path):
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_epoch]
            self._write_all()
        elif os.path.isfile(path):
            os.remove(path)

    def _write_all(self) -> None:
        if not self.rows:
            return
        tmp = self.path + ".tmp"
        fields = list(dict.fromkeys(key for row in self.rows for key in row))  # a later epoch may add columns
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def append(self, row: dict) -> None:
        self.rows.append({k: row[k] for k in row})
        self._write_all()


@dataclass(frozen=True)
class TrackerSpec:
    """Where a run's numbers go besides summary.csv: wandb and/or TensorBoard."""

    log_wandb: bool = False
    log_tensorboard: bool = False
    project_name: str = "fdsl"
    group_name: str | None = None
    entity_name: str = "YOUR_WANDB_ENV"  # a YOUR_... placeholder: wandb's default entity
    config: dict = field(default_factory=dict)  # the run's options, wandb's config


def start_wandb(spec: TrackerSpec, run_dir: str):
    """A wandb run (offline unless WANDB_MODE says otherwise), or None with one warning line when wandb is not
    installed or fails to start: tracking never stops training."""
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        import wandb
    except ImportError:
        print("warning: --log-wandb: the wandb package is not installed; training goes on without it "
              "(pip install wandb)", file=sys.stderr)
        return None
    try:
        return wandb.init(project=spec.project_name, name=os.path.basename(run_dir), group=spec.group_name,
                          config=spec.config, dir=run_dir,
                          entity=None if spec.entity_name.startswith("YOUR_") else spec.entity_name)
    except Exception as err:  # noqa: BLE001 - tracking must never stop training
        print(f"warning: wandb disabled ({type(err).__name__}: {err})", file=sys.stderr)
        return None


class Trackers:
    """wandb and TensorBoard, both optional; a run never waits on a network (WANDB_MODE defaults to offline)."""

    def __init__(self, spec: TrackerSpec, run_dir: str, info):
        self.wandb = None
        self.tb = None
        if not info.is_main:
            return
        if spec.log_wandb:
            self.wandb = start_wandb(spec, run_dir)
        if spec.log_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))
            except ImportError as err:
                print(f"warning: TensorBoard disabled ({err})", file=sys.stderr)

    def log(self, values: dict, step: int) -> None:
        if self.wandb is not None:
            self.wandb.log(values)
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.tb is not None:
            self.tb.close()


class StepTimer:
    def __init__(self):
        self.start = self.last = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed
