"""Every class's parameters, computed once at start-up: split over the ranks when torch.distributed is running,
and over worker processes per rank (the FractalDB and 3D searches take ~0.1 s a class)."""
from __future__ import annotations

import multiprocessing

import torch
from tqdm import tqdm

from fdsl.data import start_method


class ClassParamsOf:
    """``(cls, db.class_params(cls))``: the pool's task, which carries its database to the worker (pickled
    with each chunk of tasks, so a worker needs no set-up and the pool no global)."""

    def __init__(self, db):
        self.db = db

    def __call__(self, cls: int):
        return cls, self.db.class_params(cls)


def pool_context():
    """fdsl's start method (fork on Linux) while CUDA is untouched; spawn once it is initialised: a forked child
    of a process with a CUDA context inherits a broken one (and NCCL's threads), so the trainer, which has
    picked its GPU by now, starts fresh interpreters."""
    return multiprocessing.get_context("spawn") if torch.cuda.is_initialized() else start_method.context()


def all_class_params(db, workers: int = 1, progress: bool = True) -> list:
    """``db.class_params(c)`` for every class: this rank's share computed by ``workers`` processes, the other
    ranks' shares gathered."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    mine = list(range(rank, db.num_classes, world))
    bar = tqdm(total=len(mine), desc=f"{db.name} class parameters", unit="class", disable=not progress,
               leave=False, delay=2.0)  # shown only when it takes a while (FractalDB and 3D searches)
    found = {}
    if workers > 1 and len(mine) > 1:
        # the first class here: the tables the database caches on first use (CSV rows, a base system) then
        # travel with every task instead of being rebuilt for each
        first, rest = mine[0], mine[1:]
        found[first] = db.class_params(first)
        bar.update()
        chunk = max(1, len(rest) // (8 * workers))
        with pool_context().Pool(min(workers, len(rest))) as pool:
            for cls, params in pool.imap_unordered(ClassParamsOf(db), rest, chunksize=chunk):
                found[cls] = params
                bar.update()
    else:
        for cls in mine:
            found[cls] = db.class_params(cls)
            bar.update()
    bar.close()
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, found)
        for part in gathered:
            found.update(part)
    return [found[cls] for cls in range(db.num_classes)]
