"""What a study cost: the measured seconds of its finished runs per kind, and the wall time those runs take on J
jobs when the local runner orders them (longest chain first), replayed on the measured durations. A study that
ran in pieces (resumed, or on other machines) still gets the figure a single `fdsl study --jobs J` would take."""
from __future__ import annotations

import heapq

from fdsl.study.graph import KINDS, Plan, Run


def chain_seconds(run: Run, seconds: dict[str, float], after: dict[str, list[Run]], memo: dict) -> float:
    """RUN's seconds plus its longest chain of dependents (the runner's priority)."""
    if run.name not in memo:
        memo[run.name] = seconds[run.name] + max((chain_seconds(r, seconds, after, memo)
                                                  for r in after.get(run.name, [])), default=0.0)
    return memo[run.name]


def wall_seconds(runs: list[Run], seconds: dict[str, float], jobs: int) -> float:
    """The makespan of RUNS on JOBS slots: whenever a slot is free, the ready run with the longest chain starts."""
    todo = {r.name: r for r in runs}
    after: dict[str, list[Run]] = {}
    for r in runs:
        for d in r.deps:
            after.setdefault(d, []).append(r)
    memo: dict[str, float] = {}
    finished: set[str] = set()
    running: list[tuple[float, str]] = []  # (end time, name)
    now = 0.0
    while todo or running:
        ready = [r for r in todo.values() if all(d in finished or d not in seconds for d in r.deps)]
        ready.sort(key=lambda r: -chain_seconds(r, seconds, after, memo))
        for r in ready[:jobs - len(running)]:
            heapq.heappush(running, (now + seconds[r.name], r.name))
            del todo[r.name]
        if not running:
            break  # unreachable with a plan's acyclic graph; guards a malformed one
        now, name = heapq.heappop(running)
        finished.add(name)
    return now


def cost(plan: Plan, results: dict[str, dict], jobs: int) -> dict:
    """{'runs', 'core_s', 'by_kind': {kind: (count, seconds)}, 'wall_s', 'jobs', 'reused'} of the finished runs;
    a run taken from another study (`reuse:`) cost this one nothing and is only counted."""
    reused = [r for r in plan.order() if r.name in results and results[r.name].get("reused_from")]
    runs = [r for r in plan.order() if r.name in results and r not in reused]
    seconds = {r.name: float(results[r.name]["seconds"]) for r in runs}
    by_kind = {k: (sum(r.kind == k for r in runs), sum(seconds[r.name] for r in runs if r.kind == k))
               for k in KINDS}
    return {"runs": len(runs), "core_s": sum(seconds.values()), "by_kind": by_kind, "jobs": jobs,
            "wall_s": wall_seconds(runs, seconds, jobs), "reused": len(reused)}


def cost_line(c: dict) -> str:
    kinds = ", ".join(f"{n} {k} {s / 60:.1f}" for k, (n, s) in c["by_kind"].items() if n)
    reused = f" ({c['reused']} more reused from another study)" if c.get("reused") else ""
    return (f"Compute: {c['runs']} finished runs{reused}, {c['core_s'] / 60:.1f} run-minutes ({kinds}); on "
            f"{c['jobs']} job{'s' * (c['jobs'] > 1)} as `fdsl study` orders them: {c['wall_s'] / 60:.1f} min.")
