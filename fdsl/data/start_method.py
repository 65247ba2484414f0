"""How fdsl starts its worker processes (database builds, the image cache, class-parameter pools, DataLoader
workers): "fork" on Linux, "spawn" elsewhere, or the method named by the environment variable
FDSL_START_METHOD (fork, spawn or forkserver).

fork is the cheap start: a child inherits the parent's memory, so compiled renderers and the shared image cache
come for free. Windows has no fork, and on macOS a forked child of a process that has started system threads
(Objective-C runtime, Accelerate) can crash, which is why Python itself defaults to spawn there. Every fdsl
worker gets what it needs as pickled arguments, so its output does not depend on the method.
"""
from __future__ import annotations

import multiprocessing
import os
import sys

from fdsl.errors import UserError

ENV = "FDSL_START_METHOD"


def name() -> str:
    """The start method fdsl uses on this system now."""
    chosen = os.environ.get(ENV, "").strip().lower()
    if not chosen:
        return "fork" if sys.platform.startswith("linux") else "spawn"
    available = multiprocessing.get_all_start_methods()
    if chosen not in available:
        raise UserError(f"{ENV}={chosen}: this system starts processes with {', '.join(available)}; "
                        f"set one of these or unset {ENV}")
    return chosen


def context():
    """The multiprocessing context of :func:`name` (``.Pool``, ``.Process``, DataLoader's multiprocessing_context)."""
    return multiprocessing.get_context(name())


def forks() -> bool:
    """Whether children inherit this process's memory (what the shared image cache needs)."""
    return name() == "fork"
