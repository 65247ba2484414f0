"""The first minutes on a GPU: every CUDA path of fdsl once, in priority order, in at most 7 minutes.

    bash bench/gpu_check.sh --wheels .whl     # on the GPU machine: install the travelling wheels, then run
    bash bench/gpu_check.sh --dry-run         # on a CPU: the same command lines, device and sizes swapped
    bash bench/gpu_check.sh --list            # the steps and their time caps (they sum to at most 420 s)

Each step runs in its own process under its own time limit (a hung or crashed step costs its cap, never the
rest; a dry run forks each step from a server that imported torch once, the GPU run starts fresh interpreters), and is one row of the table printed at the end: what it checks, the figure it measured, and pass,
fail, or n/a with the reason (a package the machine lacks, such as faiss-gpu). The rows also go to a JSON
report (--json). A step whose cap would overrun the budget is skipped.

The dry run runs every step's GPU command line with only the device and the sizes swapped (``Step.dry``), so
a flag the GPU line gets wrong fails on the CPU too. Steps of fdsl's own (device, sync, fp16, ddp, kmeans,
loader; bench/gpucheck/checks.py) end with one ``GPUCHECK {json}`` line; the others call the project's benchmark
scripts and pytest, whose return code decides pass or fail and whose last lines are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from bench import forked

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
BUDGET_S = 420  # 7 minutes of one GPU, CUDA contexts and compiles included: room to rerun a step in 15
DRY_SLOWDOWN = 4  # a dry run's caps and budget: toy sizes, but a 2-core CPU and cold imports and compiles
MARK = "GPUCHECK "
# the CUDA tests, by file: a collection error in one file cannot hide the others
CUDA_TEST_FILES = ["tests/engine/test_trainer_options.py", "tests/render/test_gpu.py", "tests/data/test_device_source.py",
                   "tests/ssl/test_kmeans_search.py"]
DATABASES = ["fractaldb", "onepfrac", "ofdb2d", "rcdb", "visualatom", "exfractaldb", "mvfractaldb", "ofdb3d"]


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    cap_s: int  # its own time limit on the GPU (x DRY_SLOWDOWN in a dry run)
    gpu: list[str]  # the command line on the GPU, after the interpreter
    dry: dict[str, list[str]] = field(default_factory=dict)  # flag -> its values in a dry run (sizes only)
    figure: object = None  # output -> the figure (default: the last line)

    def argv(self, dry: bool) -> list[str]:
        args = dry_swap(self.gpu, self.dry) if dry else list(self.gpu)
        return [sys.executable, *args]


def dry_swap(argv: list[str], sizes: dict[str, list[str]]) -> list[str]:
    """The GPU command line with the device swapped for the CPU and the values of the ``sizes`` flags replaced
    (each one a flag of the GPU line: a dry run adds nothing)."""
    absent = sorted(set(sizes) - set(argv))
    if absent:
        raise ValueError(f"dry-run sizes {absent} are not flags of the GPU command line {argv}")
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        out.append("cpu" if arg == "cuda" and out and out[-1] in DEVICE_FLAGS else arg)
        i += 1
        if arg in sizes:
            while i < len(argv) and not argv[i].startswith("--"):
                i += 1  # drop the GPU values
            out += sizes[arg]
    return out


DEVICE_FLAGS = ("--device", "--synthetic-device")


def inner(name: str, gpu: dict[str, str], dry: dict[str, str]) -> dict:
    """A step of bench/gpucheck/checks.py: its GPU command line (sizes ``gpu``), and its sizes in a dry run."""
    flags = [item for key, value in gpu.items() for item in (f"--{key}", value)]
    return {"gpu": ["-m", "bench.gpucheck.checks", name, "--device", "cuda", *flags],
            "dry": {f"--{key}": [value] for key, value in dry.items()}}


def script(path: str) -> list[str]:
    return [os.path.join(ROOT, path)]


def pytest_summary(out: str) -> str:
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|deselected|error).*?)\s*=*$", out, re.MULTILINE)
    return found[-1] if found else last_line(out)


def train_figure(out: str) -> str:
    step = re.search(r"bare timm loop\s+([\d.]+) img/s \| fdsl engine\s+([\d.]+) img/s \| ratio ([\d.]+)", out)
    fed = re.search(r"engine step fed by it:\s+([\d.]+) img/s .*ratio ([\d.]+)", out)
    if not step:
        return last_line(out)
    text = f"engine {float(step[2]):.0f} img/s = {step[3]}x bare timm"
    return text + (f"; fed by device batches {float(fed[1]):.0f} img/s = {fed[2]}x" if fed else "")


def render_figure(out: str) -> str:
    rows = re.findall(r"^(\w+)\s+(\d+)\s+([\d,.]+)\s", out, re.MULTILINE)
    return "; ".join(f"{name}@{size} {float(rate.replace(',', '')):,.0f}" for name, size, rate in rows) + " img/s" \
        if rows else last_line(out)


def ssl_figure(out: str) -> str:
    rows = re.findall(r"^(moco|byol): fdsl/bare ([\d.]+)x", out, re.MULTILINE)
    rates = dict(re.findall(r"^(moco|byol): .*?fdsl ([\d.]+) img/s", out, re.MULTILINE))
    return "; ".join(f"{m} {rates.get(m, '?')} img/s = {r}x bare" for m, r in rows) or last_line(out)


def last_line(out: str) -> str:
    lines = [" ".join(line.split()) for line in out.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


TRAIN = ["--device", "cuda", "--img-size", "224", "--model-kwargs", "--amp", "--channels-last", "--no-data",
         "--workers", "1", "--steps", "20", "--repeats", "2"]
TRAIN_DRY = {"--img-size": ["32"], "--model-kwargs": ["depth=1"], "--batch-size": ["4"], "--steps": ["2"],
             "--repeats": ["1"], "--classes": ["4"]}
# Priority order: what the rest depends on first. The caps sum to BUDGET_S at most.
STEPS = [
    Step("device", "GPU, capability, memory, bf16; torch/torchvision/timm/numpy versions, missing packages", 15,
         **inner("device", {}, {})),
    Step("cuda-tests", "pytest -m cuda over the CUDA test files (by name)", 75,
         ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--continue-on-collection-errors",
          *[os.path.join(ROOT, f) for f in CUDA_TEST_FILES]], figure=pytest_summary),
    Step("render", "every database rendered on the device at 256 and 512 px (bench/gpu_render.py)", 50,
         [*script("bench/gpu_render.py"), "--device", "cuda", "--size", "256", "512", "--seconds", "0.5",
          "--batch", "256", "--classes", "4", "--no-numba", "--no-probe", "--databases", *DATABASES],
         {"--size": ["32"], "--seconds": ["0.05"], "--classes": ["2"], "--batch": ["2"]}, render_figure),
    Step("sync", "render -> augment -> train step with no host sync (sync debug mode 'error'); same seed, same "
                 "image", 25, **inner("sync", {"size": "224", "batch": "64"}, {"size": "16", "batch": "4"})),
    Step("train-deit-tiny", "DeiT-Tiny step: bf16, torch.compile, channels-last, device batches vs bare timm", 90,
         [*script("bench/train.py"), "--model", "deit_tiny_patch16_224", "--batch-size", "256", *TRAIN, "--compile",
          "--synthetic", "rcdb", "--synthetic-device", "cuda", "--classes", "100"], TRAIN_DRY, train_figure),
    Step("train-deit-base", "DeiT-Base step: bf16, eager, channels-last vs bare timm", 40,
         [*script("bench/train.py"), "--model", "deit_base_patch16_224", "--batch-size", "128", *TRAIN,
          "--classes", "100"], TRAIN_DRY, train_figure),
    Step("fp16", "float16 autocast + GradScaler through the engine loop", 20, **inner("fp16", {"size": "224", "batch": "64"}, {"size": "32", "batch": "4"})),
    Step("ddp", "NCCL group with device_id, all-reduce, fdsl's DDP wrap with SyncBN conversion, one step", 20,
         **inner("ddp", {}, {})),
    Step("kmeans", "fdsl.ssl.kmeans: torch backend on the GPU; faiss-gpu where installed", 20,
         **inner("kmeans", {"points": "200000"}, {"points": "2000"})),
    Step("ssl", "MoCo v2 and BYOL steps vs the bare step, bf16 (bench/ssl_step.py)", 40,
         [*script("bench/ssl_step.py"), "--device", "cuda", "--arch", "resnet50", "--img-size", "224",
          "--batch-size", "64", "--queue-size", "65536", "--rounds", "5", "--amp", "--threads", "4"],
         {"--arch": ["resnet10t"], "--img-size": ["16"], "--batch-size": ["4"], "--rounds": ["1"],
          "--threads": ["1"], "--queue-size": ["64"]}, ssl_figure),
    Step("loader", "pinned-memory DataLoader from a PNG folder to the device", 20,
         **inner("loader", {"images": "256", "size": "256", "workers": "8", "batch": "64"},
                 {"images": "16", "size": "32", "workers": "0", "batch": "4"})),
]


# -- the driver ---------------------------------------------------------------------------------------------------
def run_step(step: Step, dry: bool, remaining_s: float) -> dict:
    cap = step.cap_s * (DRY_SLOWDOWN if dry else 1)
    row = {"step": step.name, "what": step.what, "cap_s": cap}
    if cap > remaining_s:
        return {**row, "result": "skipped: over the budget", "figure": "", "seconds": 0.0}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    out, code = (run_forked if dry else run_process)(step.argv(dry), env, cap)
    seconds = time.perf_counter() - start
    row.update(seconds=round(seconds, 1), rc=code, tail=out.strip().splitlines()[-8:])
    reported = [line[len(MARK):] for line in out.splitlines() if line.startswith(MARK)]
    if reported:
        found = json.loads(reported[-1])
        row.update(result=found["result"], figure=found["figure"])
    else:
        row.update(result="pass" if code == 0 else "fail", figure=(step.figure or last_line)(out))
    if code is None:
        row["result"] = f"fail: over its {cap}s cap"
    elif code != 0 and passed(row):
        row["result"] = f"fail: exit {code}"
    return row


def run_process(argv: list[str], env: dict, cap: float) -> tuple[str, int | None]:
    """(output, exit code; None when killed at its cap) of ARGV in a fresh interpreter in its own process group:
    a timeout ends its workers too."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=cap)
        return out, proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()[0], None


def run_forked(argv: list[str], env: dict, cap: float) -> tuple[str, int | None]:
    """run_process for a dry run on a CPU: the same command line in a child forked from a server that imported
    torch and timm once (bench/forked.py), its own process group; on the GPU every step starts a fresh
    interpreter."""
    if argv[1] == "-c":  # no step's line; a fresh interpreter, as on the GPU
        return run_process(argv, env, cap)
    out, _, code = forked.run(argv, env, cap, cwd=ROOT)
    return out, code


def table(rows: list[dict]) -> str:
    lines = ["| # | step | what | figure | result | s / cap |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | {r['step']} | {r['what']} | {r['figure']} | {r['result']} | "
                     f"{r.get('seconds', 0):.0f} / {r['cap_s']} |")
    return "\n".join(lines)


def write_json(path: str, report: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(report, handle, indent=1)
    os.replace(tmp, path)


def passed(row: dict) -> bool:
    return row["result"] == "pass" or row["result"].startswith("n/a")


def options(argv=None):
    p = argparse.ArgumentParser(prog="bash bench/gpu_check.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every step's GPU command on the CPU at toy sizes")
    p.add_argument("--only", nargs="+", choices=[s.name for s in STEPS], help="run these steps only")
    p.add_argument("--json", default="gpu_check.json", help="the report (default ./gpu_check.json)")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for all steps (default {BUDGET_S}; x{DRY_SLOWDOWN} in a dry run)")
    p.add_argument("--list", action="store_true", help="print the steps and their caps, run nothing")
    return p.parse_args(argv)


def main(argv=None) -> int:
    o = options(argv)
    if o.list:
        for s in STEPS:
            print(f"{s.name:16s} {s.cap_s:4d}s  {s.what}")
        print(f"{'total':16s} {sum(s.cap_s for s in STEPS):4d}s  of the {BUDGET_S}s budget")
        return 0
    if not o.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpucheck: no CUDA GPU visible; on a CPU run `bash bench/gpu_check.sh --dry-run`", file=sys.stderr)
            return 2
    budget = o.budget or BUDGET_S * (DRY_SLOWDOWN if o.dry_run else 1)
    started, rows = time.perf_counter(), []
    for step in STEPS:
        if o.only and step.name not in o.only:
            continue
        rows.append(run_step(step, o.dry_run, budget - (time.perf_counter() - started)))
        r = rows[-1]
        print(f"[{len(rows)}] {r['step']}: {r['result']} ({r.get('seconds', 0):.0f}s) {r['figure']}", flush=True)
    total = time.perf_counter() - started
    print(table(rows))
    print(f"total {total:.0f}s of {budget:.0f}s{' (dry run on CPU)' if o.dry_run else ''}")
    write_json(o.json, {"dry_run": o.dry_run, "total_s": round(total, 1), "budget_s": budget, "steps": rows})
    return 0 if all(passed(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
