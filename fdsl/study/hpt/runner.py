"""`fdsl hpt run ROOT`: run every stage of a generated project, shareable by several runners at once.

Each job (one pre-training config, or one evaluation config x one backbone) has a run folder W under
ROOT/work/ and two markers beside it: `W.proc` while a runner works on it, `W.done` when it finished.
A runner skips a job that has either marker, so any number of runners (on one machine or on nodes sharing
the file system) split the work; the marker is claimed with an exclusive create, so two runners never take
the same job. A failed job loses its `.proc` and stops its runner (exit 1), as published. To redo a job,
delete its `.done` (or a stale `.proc` left by a killed runner).

Evaluation jobs run over every backbone: each base checkpoint itself ("0-iters", the direct-transfer
baseline; random init too) and every ROOT/work/pretrain/<base>_basetrain/<tag>/final_backbone.pth.
"""
from __future__ import annotations

import glob
import os
import random
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import yaml

from fdsl.errors import UserError

STAGES = ("pretrain", "linear", "finetune")


@dataclass
class Job:
    kind: str  # pretrain | linear | finetune
    name: str  # path under ROOT/work, e.g. linear-eval/no_basetrain/5000-iters-linear-eval-lr-s0
    config: str
    workdir: str
    extra: list[str] = field(default_factory=list)  # flags after --config

    @property
    def proc(self) -> str:
        return self.workdir + ".proc"

    @property
    def done(self) -> str:
        return self.workdir + ".done"

    def argv(self) -> list[str]:
        return ["hpt", self.kind, "--config", self.config, "--output", self.workdir, *self.extra]


def load_root(root: str) -> dict:
    path = os.path.join(root, "project.yaml")
    if not os.path.isfile(path):
        raise UserError(f"{root} is not an HPT project (no project.yaml); create it with `fdsl hpt project`")
    with open(path) as f:
        return yaml.safe_load(f)


def pretrain_jobs(root: str, trial: bool = False, byol: bool = False, bn: bool = False) -> list[Job]:
    from fdsl.study.hpt.project import parse_tag

    configs = sorted(glob.glob(os.path.join(root, "configs", "pretrain", "*", "*-iters.yaml")))
    if byol:
        configs = [c for c in configs if parse_tag(c)[2] == "byol"]
    if bn:
        configs = [c for c in configs if parse_tag(c)[1]]
    if trial and configs:
        smallest = min(parse_tag(c)[0] for c in configs)
        configs = [c for c in configs if parse_tag(c)[0] == smallest]
    jobs = []
    for cfg in configs:
        name = os.path.relpath(cfg, os.path.join(root, "configs"))[: -len(".yaml")]
        jobs.append(Job("pretrain", name, cfg, os.path.join(root, "work", name)))
    return jobs


def backbones(root: str) -> list[tuple[str, str, str]]:
    """(basetrain name, iters tag, weights path): the raw bases (0-iters; random init as weights ''), and
    every finished pre-training."""
    from fdsl.ssl.hpt.records import base_name, is_random

    project = load_root(root)
    out = [(base_name(w), "0-iters", "" if is_random(w) else os.path.abspath(w)) for w in project["base_weights"]]
    pattern = os.path.join(root, "work", "pretrain", "*_basetrain", "*-iters", "final_backbone.pth")
    for path in sorted(glob.glob(pattern)):
        tag_dir = os.path.dirname(path)
        if not os.path.isfile(tag_dir + ".done"):
            continue
        out.append((os.path.basename(os.path.dirname(tag_dir)).removesuffix("_basetrain"),
                    os.path.basename(tag_dir), path))
    return out


def eval_jobs(root: str, kind: str, all_seeds: bool = False, byol: bool = False, bn: bool = False) -> list[Job]:
    from fdsl.study.hpt.project import parse_tag

    folder = "linear-eval" if kind == "linear" else "finetune"
    configs = sorted(glob.glob(os.path.join(root, "configs", folder, "**", "*.yaml"), recursive=True))
    if kind == "linear" and not all_seeds:
        configs = [c for c in configs if c.endswith("-s0.yaml")]
    jobs = []
    for base, tag, weights in backbones(root):
        if tag != "0-iters" and ((byol and parse_tag(tag)[2] != "byol") or (bn and not parse_tag(tag)[1])):
            continue
        for cfg in configs:
            sub = os.path.relpath(os.path.dirname(cfg), os.path.join(root, "configs", folder))
            conf = os.path.basename(cfg)[: -len(".yaml")]
            parts = [folder] + ([sub] if sub != "." else []) + [f"{base}_basetrain", f"{tag}-{conf}"]
            name = "/".join(parts)
            jobs.append(Job(kind, name, cfg, os.path.join(root, "work", name), ["--weights", weights]))
    return jobs


def claim(job: Job) -> bool:
    """Take the job unless it is done or another runner holds it (exclusive create of the .proc marker)."""
    if os.path.exists(job.done):
        return False
    os.makedirs(os.path.dirname(job.proc), exist_ok=True)
    try:
        fd = os.open(job.proc, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    if os.path.exists(job.done):  # finished between the check and the claim
        os.remove(job.proc)
        return False
    return True


def finish(job: Job, ok: bool) -> None:
    if ok:
        with open(job.done, "w") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    if os.path.exists(job.proc):
        os.remove(job.proc)


def command(job: Job, launcher: str | None) -> list[str]:
    prefix = shlex.split(launcher) if launcher and job.kind == "pretrain" else []
    if prefix and "torchrun" in os.path.basename(prefix[0]):
        return prefix + ["-m", "fdsl", *job.argv()]
    return prefix + [sys.executable, "-m", "fdsl", *job.argv()]


def execute(job: Job, launcher: str | None = None) -> bool:
    return subprocess.call(command(job, launcher)) == 0


def run_jobs(jobs: list[Job], execute_fn, log=print, stop_after_first: bool = False,
             shuffle_seed: int | None = None) -> tuple[int, int]:
    """Run the jobs no other runner holds, in random order (so concurrent runners rarely collide).
    Returns (jobs run, jobs skipped); raises UserError when a job fails."""
    order = list(jobs)
    random.Random(shuffle_seed if shuffle_seed is not None else os.getpid() ^ time.time_ns()).shuffle(order)
    ran = skipped = 0
    for job in order:
        if not claim(job):
            skipped += 1
            continue
        log(f"hpt run: {job.kind} {job.name}")
        ok = False
        try:
            ok = execute_fn(job)
        finally:
            finish(job, ok)
        if not ok:
            raise UserError(f"{job.kind} {job.name} failed (config {job.config}); its .proc marker was removed, "
                            "fix the cause and run again")
        ran += 1
        if stop_after_first:
            break
    return ran, skipped
