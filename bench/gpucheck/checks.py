"""The steps of the GPU check that are fdsl's own: ``python3 -m bench.gpucheck.checks NAME --device cuda [sizes]``.

Each prints one ``GPUCHECK {"result": ..., "figure": ...}`` line and exits 0 on pass or n/a, 1 on fail. The
defaults are the GPU sizes; the dry run passes ``--device cpu`` and toy sizes, nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time

import torch

MARK = "GPUCHECK "
OPTIONAL = ("webdataset", "isal", "faiss", "wandb", "mpi4py")  # fdsl runs without each; a feature needs it


def device_of(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible")
        torch.cuda.set_device(0)
        return torch.device("cuda", 0)
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions() -> str:
    import numpy
    import timm
    import torchvision

    missing = []
    for name in OPTIONAL:
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - ImportError, or a broken install: either way missing here
            missing.append(name)
    return (f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"timm {timm.__version__}, numpy {numpy.__version__}; missing: {', '.join(missing) or 'none'}")


def check_device(o) -> tuple[str, str]:
    device = device_of(o.device)
    if device.type != "cuda":
        return "pass", f"cpu, {torch.get_num_threads()} threads (dry run); {versions()}"
    p = torch.cuda.get_device_properties(device)
    x = torch.randn(1024, 1024, device=device, dtype=torch.bfloat16)
    ok = bool(torch.isfinite((x @ x).float()).all())
    return ("pass" if ok else "fail"), (
        f"{p.name} x{torch.cuda.device_count()}, cc {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, CUDA "
        f"{torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}; {versions()}")


# -- render -> augment -> train step ------------------------------------------------------------------------------
def training_setup(device: torch.device, size: int, batch: int, amp: bool):
    """(device batch source with the recipe's augmentation, DeiT-Tiny, its optimiser, the loop's context)."""
    import timm

    from fdsl.data import registry
    from fdsl.data.batch_augment.batch import BatchAugment
    from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
    from fdsl.data.device.batches import create_batches
    from fdsl.data.device.source import DeviceBatchSource
    from fdsl.engine.distributed import DistInfo
    from fdsl.engine.loop import LoopContext
    from fdsl.engine.method import Classification

    db = registry.create("fractaldb", classes=4, size=size, seed=0, iterations=20_000)
    source = DeviceBatchSource(create_batches(db, device, progress=False), 4, 1000, batch)
    source.augment = BatchAugment(AugmentSpec(
        size=(size, size), re_prob=0.25, re_mode="pixel", color_jitter=0.4,
        randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", size)), device)
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=size, patch_size=16 if size >= 64 else 8,
                              num_classes=4).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = LoopContext(info=DistInfo(device=device), amp_dtype=torch.bfloat16 if amp else None, clip_grad=1.0)
    return source, Classification(model, torch.nn.CrossEntropyLoss()), model, optimizer, ctx


def check_sync(o) -> tuple[str, str]:
    """On CUDA: the same image twice for one seed, then render -> augment -> train step under the sync debug
    mode "error". On a CPU: the same on the CPU, and the audit on the meta device (a host read raises there)."""
    from fdsl.engine.loop import one_update

    device = device_of(o.device)
    source, method, model, optimizer, ctx = training_setup(device, o.size, o.batch, amp=device.type == "cuda")
    first, again = source.batch(0, 0)[0], source.batch(0, 0)[0]
    same = bool(torch.equal(first, again))
    one_update(method, model, source.batch(0, 1), optimizer, ctx)  # warm: kernels, optimiser state
    sync(device)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            one_update(method, model, source.batch(0, 2), optimizer, ctx)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        audit = "no host sync (sync debug mode 'error')"
    else:
        meta = training_setup(torch.device("meta"), o.size, o.batch, amp=False)
        one_update(*meta[1:3], meta[0].batch(0, 2), *meta[3:])
        audit = "no host read on the meta device (CPU stand-in for the sync audit)"
    sync(device)
    ok = same and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return ("pass" if ok else "fail"), (f"{o.batch} x {o.size} px fractaldb: render + RandAugment + erasing + "
                                        f"DeiT step, {audit}; same seed -> {'same' if same else 'DIFFERENT'} images")


def check_fp16(o) -> tuple[str, str]:
    from fdsl.engine.distributed import DistInfo
    from fdsl.engine.loop import amp_setup, one_update

    device = device_of(o.device)
    source, method, model, optimizer, ctx = training_setup(device, o.size, o.batch, amp=False)
    # the engine's --amp --amp-dtype float16: autocast + GradScaler on CUDA, float32 with a note on a CPU
    ctx.amp_dtype, ctx.scaler = amp_setup(True, "float16", DistInfo(device=device))
    images, targets = source.batch(0, 0)
    losses = []
    for _ in range(8):
        with torch.no_grad(), ctx.autocast():
            losses.append(float(method.loss_fn(model(images), targets)))
        one_update(method, model, (images, targets), optimizer, ctx)
    fp32 = all(p.dtype == torch.float32 for p in model.parameters())
    ok = losses[-1] < losses[0] and fp32
    scale = f"scale {ctx.scaler.get_scale():.0f}" if ctx.scaler else "float32: float16 autocast is CUDA only"
    return ("pass" if ok else "fail"), (f"loss {losses[0]:.3f} -> {losses[-1]:.3f} on one batch, {scale}, weights "
                                        f"{'float32' if fp32 else 'NOT float32'}")


# -- distributed -------------------------------------------------------------------------------------------------
def check_ddp(o) -> tuple[str, str]:
    import torch.distributed as dist

    from fdsl.engine import distributed
    from fdsl.engine.fit import RunConfig, wrap
    from fdsl.engine.method import Classification

    class OneRank(distributed.DistInfo):  # a group of one that takes the multi-rank branches of fdsl's wrap
        distributed = True

    device = device_of(o.device)
    info = OneRank(rank=0, world_size=1, local_rank=0, launcher="gpucheck", device=device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    distributed._init_group("nccl", info, "127.0.0.1", str(port), 60.0)  # NCCL with device_id; gloo on a CPU
    try:
        summed = torch.ones(4, device=device)
        dist.all_reduce(summed)
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).to(device)
        method = Classification(net, torch.nn.CrossEntropyLoss())
        model = wrap(method, RunConfig(run_dir="", arch="net", sync_bn=True), info)
        before = method.module[0].weight.detach().clone()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16, device=device)),
                                                 torch.arange(8, device=device) % 4)
        loss.backward()
        opt.step()
        moved = not torch.equal(before, method.module[0].weight.detach())
        ok = summed.tolist() == [1.0] * 4 and moved and bool(torch.isfinite(loss))
        bn = type(method.module[1]).__name__
        note = "" if device.type == "cuda" else " (SyncBN is CUDA only: kept BatchNorm2d)"
        return ("pass" if ok else "fail"), (f"{dist.get_backend()} group, all-reduce ok, {type(model).__name__} "
                                            f"step with {bn}, loss {loss:.3f}{note}")
    finally:
        dist.destroy_process_group()


def check_kmeans(o) -> tuple[str, str]:
    import numpy as np

    from fdsl.ssl.kmeans.driver import KMeansOptions, kmeans
    from fdsl.ssl.kmeans.search import faiss_has_gpu, faiss_module

    device = device_of(o.device)
    n, d, k = o.points, 256 if device.type == "cuda" else 32, 1000 if device.type == "cuda" else 10
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, d)).astype(np.float32) * 4
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)).astype(np.float32)
    faiss = "faiss-gpu" if device.type == "cuda" else "faiss"
    rows, ok = [], True
    for backend in ("torch", faiss):
        if backend.startswith("faiss") and (faiss_module() is None or backend == "faiss-gpu" and not faiss_has_gpu()):
            rows.append(f"{backend} n/a (not installed here; the torch backend stands in)")
            continue
        start = time.perf_counter()
        try:
            result = kmeans(x, k, KMeansOptions(niter=10, seed=0, backend=backend, device=device))
        except Exception as err:  # noqa: BLE001 - the row says what failed
            rows.append(f"{backend}: {type(err).__name__}: {str(err).splitlines()[0][:60]}")
            ok = False
            continue
        sync(device)
        rows.append(f"{backend} {time.perf_counter() - start:.2f}s loss {result.losses[-1]:.3f}")
    return ("pass" if ok else "fail"), f"{n}x{d}, k={k}, 10 iterations: " + "; ".join(rows)


def check_loader(o) -> tuple[str, str]:
    import numpy as np

    from fdsl.cli.args import parse
    from fdsl.data.folder import ImageFolder
    from fdsl.data.png import encode
    from fdsl.data.transforms import data_config, train_transform
    from fdsl.recipes.supervised import data_spec

    device = device_of(o.device)
    pin = device.type == "cuda"
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        for i in range(o.images):  # fdsl's own PNG encoder: a few ms an image, where PIL takes ~20
            folder = os.path.join(root, f"{i % 4:05d}")
            os.makedirs(folder, exist_ok=True)
            with open(f"{folder}/{i:05d}.png", "wb") as handle:
                handle.write(encode(rng.integers(0, 255, (o.size, o.size), dtype=np.uint8)))
        args = parse("pretrain", ["--img-size", str(min(224, o.size)), "--aa", "rand-m9-mstd0.5-inc1"])
        spec = data_spec(args)
        dataset = ImageFolder(root, train_transform(spec.augment, data_config(spec.inputs, None)))
        loader = torch.utils.data.DataLoader(dataset, batch_size=o.batch, num_workers=o.workers, pin_memory=pin,
                                             drop_last=True)
        start, seen, pinned = time.perf_counter(), 0, True
        for images, _ in loader:
            pinned = pinned and images.is_pinned()
            images = images.to(device, non_blocking=True)
            seen += images.shape[0]
        sync(device)
        rate = seen / (time.perf_counter() - start)
    note = "pinned" if pin and pinned else ("NOT pinned" if pin else "unpinned (no CUDA)")
    ok = seen == o.images // o.batch * o.batch and (pinned or not pin)
    return ("pass" if ok else "fail"), f"{seen} PNGs of {o.size} px, {o.workers} workers, {rate:.0f} img/s, {note}"


CHECKS = {"device": check_device, "sync": check_sync, "fp16": check_fp16, "ddp": check_ddp, "kmeans": check_kmeans,
          "loader": check_loader}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.gpucheck.checks", description=__doc__)
    p.add_argument("name", choices=sorted(CHECKS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=224, help="image side")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--points", type=int, default=200_000, help="k-means points")
    p.add_argument("--images", type=int, default=256, help="loader: PNGs written and read")
    p.add_argument("--workers", type=int, default=8, help="loader: DataLoader workers")
    o = p.parse_args(argv)
    result, figure = CHECKS[o.name](o)
    print(MARK + json.dumps({"result": result, "figure": figure}), flush=True)
    return 0 if result == "pass" or result.startswith("n/a") else 1


if __name__ == "__main__":
    sys.exit(main())
