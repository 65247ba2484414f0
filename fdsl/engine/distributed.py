"""Process-group setup from any launcher: OpenMPI, torchrun, PMI or SLURM, and the collectives on it.

The published trainers read only OMPI_COMM_WORLD_*; here fdsl.launch finds the rank (the first launcher
whose variables are set wins), and under mpirun without MASTER_ADDR rank 0's address comes through mpi4py
(docs/training.md, "Distributed"). The collectives return new tensors on the caller's device: a CPU tensor
goes through this rank's GPU under NCCL, which reduces device tensors only.
"""
from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from fdsl import launch
from fdsl.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(env=os.environ) -> DistInfo:
    found = launch.from_environment(env)
    if found.launcher == "none":
        return DistInfo()
    local = found.local_rank if found.local_rank is not None else found.rank % max(torch.cuda.device_count(), 1)
    return DistInfo(found.rank, found.world_size, local, found.launcher)


def select_device(info: DistInfo, requested: str | None) -> torch.device:
    if requested:
        kind = torch.device(requested).type
    else:
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        index = info.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device(kind)


def init(requested_device: str | None = None, backend: str = "nccl", timeout_s: float = 600.0) -> DistInfo:
    """Detect the launcher, pick one device per local rank and join the process group (gloo on CPU)."""
    info = detect()
    info.device = select_device(info, requested_device)
    if info.distributed and not dist.is_initialized():
        try:
            addr, port = launch.rendezvous(launch.from_environment())
        except RuntimeError as err:
            raise UserError(f"rank {info.rank}/{info.world_size}: {err}") from None
        try:
            _init_group(backend, info, addr, port, timeout_s)
        except (RuntimeError, dist.DistError) as err:
            raise UserError(f"rank {info.rank}/{info.world_size}: no process group at tcp://{addr}:{port} within "
                            f"{timeout_s:.0f}s ({str(err).splitlines()[0][:120]}); did a peer fail, or are "
                            "MASTER_ADDR/MASTER_PORT wrong?") from None
    return info


def _init_group(backend: str, info: DistInfo, addr: str, port: str, timeout_s: float) -> None:
    backend = backend if info.device.type == "cuda" else "gloo"
    bound = {}
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        # NCCL bound to this rank's GPU from the start: no guess of the device at the first collective
        # (torch warns and may hang when two ranks guess the same GPU), and eager communicator creation.
        bound["device_id"] = info.device  # cuda:<local rank modulo the GPUs>, set by select_device
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{addr}:{port}",
        world_size=info.world_size,
        rank=info.rank,
        timeout=datetime.timedelta(seconds=timeout_s),
        **bound,
    )


def _through_backend(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A copy of values on the device the backend reduces on (NCCL: info.device; gloo: where it is)."""
    if dist.get_backend() == "nccl":
        return values.to(info.device, copy=True)
    return values.clone()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.distributed:
        return values
    reduced = _through_backend(values, info)
    dist.all_reduce(reduced)
    return reduced.to(values.device)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.distributed:
        return values
    return all_reduce_sum(values, info) / info.world_size


def all_gather_rows(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """[world_size, *values.shape]: every rank's values, in rank order (the same shape on every rank)."""
    if not info.distributed:
        return values[None]
    src = _through_backend(values, info)
    out = [torch.empty_like(src) for _ in range(info.world_size)]
    dist.all_gather(out, src)
    return torch.stack(out).to(values.device)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo, failed: bool) -> None:
    """Leave the group. A failed rank does not wait for its peers: they time out or are killed by the launcher."""
    if info.distributed and dist.is_initialized() and not failed:
        dist.destroy_process_group()


def run(body, requested_device: str | None = None, backend: str = "nccl", timeout_s: float = 600.0) -> int:
    """Join the process group, run body(info), turn a peer's failure into one line, leave the group. Every
    command that trains goes through here."""
    info = init(requested_device, backend, timeout_s)
    failed = True
    try:
        body(info)
        failed = False
        return 0
    except UserError as err:
        text = str(err).strip()
        if "Original Traceback" in text:  # raised in a DataLoader worker: keep the message, drop the traceback
            raise UserError(text.splitlines()[-1].removeprefix("fdsl.errors.UserError: ")) from None
        raise
    except (RuntimeError, dist.DistError) as err:
        if not info.distributed:
            raise
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UserError(f"rank {info.rank}/{info.world_size}: a peer process failed or stopped answering "
                        f"({first}); see the other ranks' logs") from None
    finally:
        shutdown(info, failed)
