"""Stopping a run cleanly from outside: SIGUSR1 (SLURM's warning before pre-emption) and SIGTERM ask the
run to stop after the current step, write a resumable checkpoint and, under SLURM, requeue the job."""
from __future__ import annotations

import os
import signal
import subprocess
import threading

import torch

from fdsl.engine import distributed
from fdsl.engine.logging import print0


class StopSignal:
    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def install(self) -> None:
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

    def name(self) -> str:
        return f"signal {signal.Signals(self.received).name if self.received else 'on another rank'}"

    def requeue(self, info) -> None:
        """Under SLURM, a pre-empted job puts itself back in the queue (rank 0 only)."""
        job = os.environ.get("SLURM_JOB_ID")
        if self.received == signal.SIGUSR1 and job and info.is_main:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
            print0(info, f"scontrol requeue {job}: " + ("done" if result.returncode == 0 else result.stderr.strip()))
