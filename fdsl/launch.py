"""Which process of a launch am I? Rank discovery shared by the database builder and the engine.

Launchers say it in environment variables, checked in this order: OpenMPI's mpirun
(``OMPI_COMM_WORLD_*``), torchrun (``RANK``/``WORLD_SIZE``), PMI (MPICH / Intel MPI ``mpiexec``,
``srun --mpi=pmi2``: ``PMI_RANK``/``PMI_SIZE``) and SLURM's srun (``SLURM_PROCID``/``SLURM_NTASKS``).
Under an MPI launcher, mpi4py (the optional ``mpi`` extra) answers instead when it is installed, and
also gives a barrier and a broadcast.

This module imports nothing of fdsl, so ``fdsl.data`` and ``fdsl.engine`` both use it.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

# (name, rank, world size, local rank, local world size) variables per launcher, checked in order.
LAUNCHERS = (
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", None),
)
MPI_LAUNCHERS = ("openmpi", "pmi")
# Variables naming one launch: equal on every rank of it, different for the next launch.
JOB_VARIABLES = ("PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "PMI_KVSNAME")


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None  # None: the launcher did not say
    local_size: int | None = None
    launcher: str = "none"
    job: str = ""  # names this launch; "" when the launcher gave nothing to name it by
    mpi: bool = False  # mpi4py answered (barrier and broadcast go through MPI)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def one_node(self) -> bool:
        """True when every rank is known to run on this machine."""
        return self.world_size == 1 or self.local_size == self.world_size


def _int(env, name: str | None) -> int | None:
    value = env.get(name) if name else None
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _job(env) -> str:
    for name in JOB_VARIABLES:
        if env.get(name):
            step = env.get("SLURM_STEP_ID", "") if name == "SLURM_JOB_ID" else ""
            return f"{env[name]}.{step}" if step else env[name]
    return ""


def from_environment(env=os.environ) -> Launch:
    """The launch as the environment variables describe it (no MPI call)."""
    for name, rank_var, size_var, local_var, local_size_var in LAUNCHERS:
        rank, size = _int(env, rank_var), _int(env, size_var)
        if rank is not None and size is not None:
            local_size = _int(env, local_size_var)
            if name == "slurm" and _int(env, "SLURM_NNODES") == 1:
                local_size = size
            return Launch(rank, size, _int(env, local_var), local_size, name, _job(env))
    return Launch()


def mpi_world(env=os.environ):
    """mpi4py's COMM_WORLD when an MPI launcher started us and mpi4py with an MPI library is installed,
    else None. ``FDSL_MPI4PY=0`` turns it off. Importing mpi4py.MPI initialises MPI."""
    if from_environment(env).launcher not in MPI_LAUNCHERS or env.get("FDSL_MPI4PY", "1") == "0":
        return None
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError):  # not installed, or no MPI library behind it
        return None
    return MPI.COMM_WORLD


def discover(env=os.environ, use_mpi: bool = True) -> Launch:
    """Rank, world size and local rank of this process: from mpi4py under an MPI launcher when
    installed (and ``use_mpi``), else from the launcher's variables; one process when none is set."""
    found = from_environment(env)
    comm = mpi_world(env) if use_mpi else None
    if comm is None:
        return found
    job = found.job or comm.bcast(f"{socket.gethostname()}:{os.getpid()}" if comm.Get_rank() == 0 else None)
    return Launch(comm.Get_rank(), comm.Get_size(), found.local_rank, found.local_size, found.launcher, job, True)


def mpi_barrier(poll_s: float = 0.2) -> None:
    """Wait for every rank without spinning a core (MPI_Barrier busy-waits in most MPIs)."""
    comm = mpi_world()
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def rendezvous(launch: Launch, env=os.environ) -> tuple[str, str]:
    """(MASTER_ADDR, MASTER_PORT) for torch.distributed. Set variables win. Under mpirun without them,
    rank 0 shares its host name and a free port through mpi4py; without mpi4py, ranks that all run on
    this machine use localhost. Raises RuntimeError (one line) when mpirun put ranks on several machines
    and they cannot find rank 0; other launchers keep the localhost default."""
    addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    if addr:
        return addr, port or "8888"
    if launch.launcher in MPI_LAUNCHERS and launch.distributed:
        comm = mpi_world(env)
        if comm is not None:
            mine = (socket.gethostname(), port or str(free_port())) if comm.Get_rank() == 0 else None
            return comm.bcast(mine, root=0)
    several_machines = launch.launcher in MPI_LAUNCHERS and launch.local_size is not None and not launch.one_node
    if not several_machines:  # one machine, or a launcher that does not say (as before: localhost)
        return "localhost", port or "8888"
    raise RuntimeError(f"{launch.launcher}: {launch.world_size} ranks on several machines and no MASTER_ADDR; "
                       f"export MASTER_ADDR=<rank 0's host> (mpirun -x MASTER_ADDR) or pip install 'fdsl[mpi]' "
                       f"(mpi4py) to share it automatically")
