"""The first minutes on a GPU: every CUDA path of fdsl once, in priority order, in at most 8 minutes.

    python -m fdsl.gpucheck                   # on the GPU machine (bench/gpu_check.sh is the same)
    python -m fdsl.gpucheck --dry-run         # on a CPU: every step at toy size on the CPU device
    python -m fdsl.gpucheck --list            # the steps and their time caps

Each step runs in its own process under its own time limit (a hung or crashed step costs its cap, never the
rest), and is one row of the table printed at the end: what it checks, the figure it measured, pass or fail.
The same rows go to a JSON report (--json). A step whose cap would overrun the 8-minute budget is skipped.

Steps of fdsl's own (device, fp16, ddp, kmeans, loader) run here, as `python -m fdsl.gpucheck --inner NAME`,
and end with one `GPUCHECK {json}` line; the others call the project's benchmark scripts and pytest, whose
return code decides pass or fail and whose last lines are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 480  # the acceptance run's 8 minutes on one GPU
DRY_SLOWDOWN = 4  # a dry run's caps and budget: toy sizes, but a 2-core CPU and cold imports and compiles
MARK = "GPUCHECK "


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    cap_s: int  # its own time limit on the GPU (the dry run uses the same caps)
    argv: Callable[[bool], list[str]]  # dry_run -> command line
    figure: Callable[[str], str] | None = None  # output -> the figure (default: the last line)


def inner(name: str) -> Callable[[bool], list[str]]:
    return lambda dry: [sys.executable, "-m", "fdsl.gpucheck", "--inner", name, *(["--dry-run"] if dry else [])]


def script(path: str, gpu: list[str], dry: list[str]) -> Callable[[bool], list[str]]:
    return lambda is_dry: [sys.executable, os.path.join(ROOT, path), *(dry if is_dry else gpu)]


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


def ssl_figure(out: str) -> str:
    rows = re.findall(r"^(moco|byol): fdsl/bare ([\d.]+)x", out, re.MULTILINE)
    rates = dict(re.findall(r"^(moco|byol): .*?fdsl ([\d.]+) img/s", out, re.MULTILINE))
    return "; ".join(f"{m} {rates.get(m, '?')} img/s = {r}x bare" for m, r in rows) or last_line(out)


def last_line(out: str) -> str:
    lines = [" ".join(line.split()) for line in out.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


TINY_TRAIN = ["--device", "cpu", "--model-kwargs", "depth=1", "--img-size", "32", "--batch-size", "4", "--steps",
              "2", "--repeats", "1", "--amp", "--compile", "--compile-backend", "aot_eager", "--channels-last",
              "--no-data", "--synthetic", "rcdb", "--classes", "4", "--workers", "0"]
GPU_TRAIN = ["--device", "cuda", "--img-size", "224", "--model-kwargs", "--amp", "--compile", "--channels-last",
             "--no-data", "--synthetic", "rcdb", "--synthetic-device", "cuda", "--classes", "100", "--steps", "20",
             "--repeats", "2", "--workers", "4"]

# Priority order: what the rest depends on first. Caps add up to 475 s of the 480 s budget.
STEPS = [
    Step("device", "CUDA device, capability, memory, torch/CUDA versions, bf16", 15, inner("device")),
    Step("cuda-tests", "pytest -m cuda (the tests that skip without CUDA)", 80,
         lambda dry: [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                      os.path.join(ROOT, "tests")], pytest_summary),
    Step("render", "bench/gpu_render.py at 256 and 512 px, every database", 90,
         script("bench/gpu_render.py", ["--device", "cuda", "--size", "256", "512"],
                ["--device", "cpu", "--size", "32", "--batch", "2", "--seconds", "0.2", "--databases", "rcdb",
                 "--classes", "2", "--no-numba"])),
    Step("train-deit-tiny", "DeiT-Tiny step: bf16, compile, channels-last, device batches vs bare timm", 75,
         script("bench/train.py", ["--model", "deit_tiny_patch16_224", "--batch-size", "256", *GPU_TRAIN],
                ["--model", "deit_tiny_patch16_224", *TINY_TRAIN]), train_figure),
    Step("train-deit-base", "DeiT-Base step: bf16, compile, channels-last, device batches vs bare timm", 75,
         script("bench/train.py", ["--model", "deit_base_patch16_224", "--batch-size", "128", *GPU_TRAIN],
                ["--model", "deit_base_patch16_224", *TINY_TRAIN]), train_figure),
    Step("fp16", "float16 autocast + GradScaler through the engine loop", 20, inner("fp16")),
    Step("ddp", "one-process NCCL group (device_id), all-reduce, DDP + SyncBN step", 30, inner("ddp")),
    Step("kmeans", "fdsl.ssl.kmeans: faiss-gpu beside the torch backend", 25, inner("kmeans")),
    Step("ssl", "MoCo v2 and BYOL steps vs the bare step (bench/ssl_step.py)", 45,
         script("bench/ssl_step.py", ["--device", "cuda", "--arch", "resnet50", "--img-size", "224", "--batch-size",
                                      "64", "--rounds", "5", "--amp", "--threads", "4"],
                ["--device", "cpu", "--arch", "resnet18", "--img-size", "32", "--batch-size", "4", "--queue-size",
                 "64", "--rounds", "1"]), ssl_figure),
    Step("loader", "pinned-memory DataLoader from a PNG folder to the device", 20, inner("loader")),
]


# -- the steps run in this module (a child process each) ----------------------------------------------------------
def device_of(dry: bool):
    import torch

    if dry:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device visible")
    torch.cuda.set_device(0)
    return torch.device("cuda", 0)


def check_device(dry: bool) -> tuple[str, str]:
    import torch

    device = device_of(dry)
    if device.type != "cuda":
        return "pass", f"cpu, torch {torch.__version__}, {torch.get_num_threads()} threads (no CUDA: dry run)"
    p = torch.cuda.get_device_properties(device)
    x = torch.randn(1024, 1024, device=device, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    assert torch.isfinite((x @ x).float()).all()
    return "pass", (f"{p.name} x{torch.cuda.device_count()}, cc {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
                    f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")


def tiny_training(device, dtype, scaler, steps: int, size: int, batch: int):
    """(first loss, last loss, model) of `steps` engine updates of a small ViT on one learnable batch."""
    import timm
    import torch

    from fdsl.engine.distributed import DistInfo
    from fdsl.engine.loop import LoopContext, train_one_epoch
    from fdsl.engine.method import Classification
    from fdsl.engine.schedule import Schedule

    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=size, num_classes=4, depth=2).to(device)
    targets = torch.arange(batch, device=device) % 4
    images = torch.randn(batch, 3, size, size, device=device) * 0.3 + targets[:, None, None, None]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctx = LoopContext(info=DistInfo(device=device), amp_dtype=dtype, scaler=scaler, log_interval=10**9)
    method = Classification(model, torch.nn.CrossEntropyLoss())
    losses = [train_one_epoch(method, model, [(images, targets)], opt, Schedule(None, True, 1), ctx, epoch=e)["loss"]
              for e in range(steps)]
    return losses[0], losses[-1], model


def check_fp16(dry: bool) -> tuple[str, str]:
    import torch

    device = device_of(dry)
    scaler = torch.amp.GradScaler(device.type)
    first, last, model = tiny_training(device, torch.float16, scaler, steps=5 if dry else 20,
                                       size=32 if dry else 224, batch=4 if dry else 64)
    fp32 = all(p.dtype == torch.float32 for p in model.parameters())
    ok = last < first and fp32
    return ("pass" if ok else "fail"), (f"loss {first:.3f} -> {last:.3f}, scale {scaler.get_scale():.0f}, "
                                        f"weights {'float32' if fp32 else 'NOT float32'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(dry: bool) -> tuple[str, str]:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from fdsl.engine import distributed

    device = device_of(dry)
    info = distributed.DistInfo(rank=0, world_size=1, local_rank=0, launcher="gpucheck", device=device)
    distributed._init_group("nccl", info, "127.0.0.1", str(free_port()), 60.0)  # gloo on a CPU
    try:
        summed = torch.ones(4, device=device)
        dist.all_reduce(summed)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
        sync_bn = device.type == "cuda"  # SyncBatchNorm refuses CPU modules
        if sync_bn:
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = DistributedDataParallel(net.to(device), device_ids=[device.index] if sync_bn else None)
        before = net[0].weight.detach().clone()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16, device=device)),
                                                 torch.arange(8, device=device) % 4)
        loss.backward()
        opt.step()
        moved = not torch.equal(before, net[0].weight.detach())
        backend = dist.get_backend()
        ok = summed.tolist() == [1.0] * 4 and moved and torch.isfinite(loss).item()
        bn = type(net[1]).__name__
        note = "" if sync_bn else " (SyncBN skipped: no CUDA)"
        return ("pass" if ok else "fail"), f"{backend} group, all-reduce ok, DDP step with {bn}, loss {loss:.3f}{note}"
    finally:
        dist.destroy_process_group()


def check_kmeans(dry: bool) -> tuple[str, str]:
    import numpy as np
    import torch

    from fdsl.ssl.kmeans import kmeans

    device = device_of(dry)
    n, d, k = (2000, 32, 10) if dry else (200_000, 256, 1000)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 4
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)).astype(np.float32)
    faiss_backend = "faiss" if device.type == "cpu" else "faiss-gpu"
    rows, ok = [], True
    for backend in (faiss_backend, "torch"):
        start = time.perf_counter()
        try:
            result = kmeans(x, k, niter=10, seed=0, backend=backend, device=device)
        except Exception as err:  # noqa: BLE001 - a missing faiss-gpu is this step's finding, not a crash
            rows.append(f"{backend}: {type(err).__name__}: {str(err).splitlines()[0][:60]}")
            ok = False
            continue
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows.append(f"{backend} {time.perf_counter() - start:.2f}s loss {result.losses[-1]:.3f}")
    return ("pass" if ok else "fail"), f"{n}x{d}, k={k}: " + "; ".join(rows)


def check_loader(dry: bool) -> tuple[str, str]:
    import numpy as np
    import torch
    from PIL import Image

    from fdsl.cli.args import parse
    from fdsl.data.folder import ImageFolder
    from fdsl.data.transforms import data_config, train_transform

    device = device_of(dry)
    count, size, workers, batch = (16, 32, 0, 4) if dry else (1024, 256, 8, 128)
    pin = device.type == "cuda"
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        for i in range(count):
            folder = os.path.join(root, f"{i % 4:05d}")
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(f"{folder}/{i:05d}.png")
        args = parse("pretrain", ["--img-size", str(224 if not dry else 32), "--aa", "rand-m9-mstd0.5-inc1"])
        dataset = ImageFolder(root, train_transform(args, data_config(args, None)))
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=pin,
                                             drop_last=True, persistent_workers=False)
        start, seen, pinned = time.perf_counter(), 0, True
        for images, _ in loader:
            pinned = pinned and images.is_pinned()
            images = images.to(device, non_blocking=True)
            seen += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - start)
    note = "pinned" if pin and pinned else ("NOT pinned" if pin else "unpinned (no CUDA)")
    ok = seen == count // batch * batch and (pinned or not pin)
    return ("pass" if ok else "fail"), f"{seen} PNGs of {size} px, {workers} workers, {rate:.0f} img/s, {note}"


INNER = {"device": check_device, "fp16": check_fp16, "ddp": check_ddp, "kmeans": check_kmeans, "loader": check_loader}


# -- the driver ---------------------------------------------------------------------------------------------------
def run_step(step: Step, dry: bool, remaining_s: float) -> dict:
    cap = step.cap_s * (DRY_SLOWDOWN if dry else 1)
    row = {"step": step.name, "what": step.what, "cap_s": cap}
    if cap > remaining_s:
        return {**row, "result": "skipped: over the 8-minute budget", "figure": "", "seconds": 0.0}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
           "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.Popen(step.argv(dry), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own group: a timeout ends its workers too
    try:
        out, _ = proc.communicate(timeout=cap)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
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
    elif code != 0 and row["result"] == "pass":
        row["result"] = f"fail: exit {code}"
    return row


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


def options(argv=None):
    p = argparse.ArgumentParser(prog="python -m fdsl.gpucheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="every step at toy size on the CPU device")
    p.add_argument("--only", nargs="+", choices=[s.name for s in STEPS], help="run these steps only")
    p.add_argument("--json", default="gpu_check.json", help="the report (default ./gpu_check.json)")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for all steps (default {BUDGET_S}; x{DRY_SLOWDOWN} in a dry run)")
    p.add_argument("--list", action="store_true", help="print the steps and their caps, run nothing")
    p.add_argument("--inner", choices=sorted(INNER), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    o = options(argv)
    if o.inner:
        result, figure = INNER[o.inner](o.dry_run)
        print(MARK + json.dumps({"result": result, "figure": figure}), flush=True)
        return 0 if result == "pass" else 1
    if o.list:
        for s in STEPS:
            print(f"{s.name:16s} {s.cap_s:4d}s  {s.what}")
        print(f"{'total':16s} {sum(s.cap_s for s in STEPS):4d}s  of the {BUDGET_S}s budget")
        return 0
    if not o.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpucheck: no CUDA GPU visible; on a CPU run `python -m fdsl.gpucheck --dry-run`", file=sys.stderr)
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
    return 0 if all(r["result"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
