"""Training input cost on one core, side by side in one run (process CPU time, best of --repeats):

1. decode per image of fdsl's PNGs at the published sizes: PIL (open + load, and the loader's open + convert
   to RGB before this change) against fdsl's reader (fdsl.data.png.decode);
2. CPU cost per training image of the DeiT recipe at 224 px (timm create_transform(224, is_training=True,
   auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, color_jitter=0.4, interpolation='bicubic')) from those
   files: timm's CPU pipeline as the loader ran it before, the same pipeline with the crop first
   (fdsl.data.transforms.crop_first) and the --gpu-augment worker (read, decode, crop box, collate);
   the device half is timed on CPU tensors too, for reference only (it runs on the GPU);
3. the demo's pre-training (exe_scripts/_digits.sh: patch-8 ViT at 32 px, batch 64, crops of 75-100%, flips):
   loader images/s with -j 0 and -j 2, read from the files or from --cache-images, against the engine step;
   and the cached loader through the engine's per-sample seeding (fdsl.data.samplers.Seeded), as issue #17
   fixed it (the CPU generator alone) and as before (torch.manual_seed, which also queues a CUDA seeding).

    PYTHONPATH=. python bench/input.py [--images 6] [--repeats 5] [--skip-demo]
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform

from fdsl.data import cache, png, registry, samplers, transforms
from fdsl.data.batch_augment.folder import DeviceAugment, FolderInput, collate_folder_input
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.folder import ImageFolder

DATABASES = {"rcdb": {"size": 512}, "visualatom": {"size": 512}, "fractaldb": {"size": 362},
             "onepfrac": {"size": 512}}
DEIT = {"is_training": True, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "color_jitter": 0.4,
        "interpolation": "bicubic"}


def options():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=6, help="images per database (rendered at the published size)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-demo", action="store_true", help="only parts 1 and 2")
    p.add_argument("--demo-images", type=int, default=2048, help="64 px images in the demo's folder")
    return p.parse_args()


def render(name: str, count: int) -> list[bytes]:
    classes = max(1, count // 3)
    db = registry.create(name, classes=classes, seed=0, **DATABASES[name])
    out = []
    for cls in range(classes):
        out += [png.encode(img) for img in db.render(cls, db.class_params(cls), range(count // classes))]
    return out


def per_image_ms(fn, items, repeats: int) -> float:
    fn(items[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - start)
    return best / len(items) * 1000


def pil_load(data: bytes):
    with Image.open(io.BytesIO(data)) as img:
        img.load()


def pil_rgb(data: bytes):
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def decode_part(files: dict[str, list[bytes]], repeats: int) -> None:
    print("1. decode per image (ms, one core)           PIL load | PIL +RGB (loader before) |  fdsl  | x PIL load "
          "| x loader")
    for name, datas in files.items():
        load = per_image_ms(pil_load, datas, repeats)
        rgb = per_image_ms(pil_rgb, datas, repeats)
        fast = per_image_ms(png.decode, datas, repeats)
        print(f"   {name:<11} {DATABASES[name]['size']} px                      {load:6.3f}   |  {rgb:6.3f}"
              f"                  | {fast:6.3f} |  {load / fast:4.1f}x     |  {rgb / fast:4.1f}x")


def training_part(files: dict[str, list[bytes]], repeats: int) -> None:
    deit = create_transform(224, **DEIT)
    first = transforms.crop_first(deit)
    spec = AugmentSpec(size=(224, 224), interpolation="bicubic", re_prob=0.25,
                       randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", 224))
    print("2. CPU per training image, DeiT recipe @224 (ms)  timm CPU (before) | crop first | --gpu-augment "
          "worker | ratio | device half on CPU tensors")
    for name, datas in files.items():
        size = DATABASES[name]["size"]
        worker = FolderInput(size, spec)
        random.seed(0)
        before = per_image_ms(lambda d: deit(pil_rgb(d)), datas, repeats)
        crop_first = per_image_ms(lambda d: first(read_bytes(d)), datas, repeats)
        gpu_worker = per_image_ms(lambda d, worker=worker: worker(read_bytes(d)), datas, repeats)
        samples = [(worker(read_bytes(d)), 0) for d in datas]
        start = time.process_time()
        batch = collate_folder_input(samples)
        collate = (time.process_time() - start) / len(datas) * 1000
        device = DeviceAugment(spec, "cpu")
        start = time.process_time()
        out = device(batch[0])
        device_ms = (time.process_time() - start) / len(datas) * 1000
        assert out.shape == (len(datas), 3, 224, 224) and torch.isfinite(out).all()
        worker_ms = gpu_worker + collate
        print(f"   {name:<11} {size} px                            {before:6.2f}       |  {crop_first:6.2f}    | "
              f"{worker_ms:6.3f}               | 1/{before / worker_ms:4.1f} | {device_ms:6.1f}")


def read_bytes(data: bytes) -> np.ndarray:
    fast = png.decode(data)
    return fast if fast is not None else np.asarray(pil_rgb(data))


# -- 3. the demo ---
def step_rate(args, steps: int = 20) -> float:
    """Images/s of the engine's training step on random 32 px batches, in process CPU time (1 thread)."""
    from timm.optim import create_optimizer_v2

    from fdsl.engine import distributed, schedule
    from fdsl.engine.loop import LoopContext, train_one_epoch
    from fdsl.engine.method import Classification
    from fdsl.models import factory
    from fdsl.recipes.common import model_spec, schedule_spec

    model = factory.create(model_spec(args), 100)
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    ctx = LoopContext(info=distributed.DistInfo(device=torch.device("cpu")), log_interval=10**9, epochs=1)
    data = [(torch.randn(64, 3, 32, 32), torch.randint(0, 100, (64,)))] * steps
    method = Classification(model, torch.nn.CrossEntropyLoss())
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        train_one_epoch(method, model, data, opt, schedule.build(schedule_spec(args), opt, steps), ctx, epoch=0)
        best = min(best, time.process_time() - start)
    return steps * 64 / best

def demo_part(o) -> None:
    from fdsl.cli.args import parse
    from fdsl.engine.data import source_size
    from fdsl.models import factory
    from fdsl.recipes.common import model_spec
    from fdsl.recipes.supervised import data_spec

    torch.set_num_threads(1)
    argv = ["--model", "deit_tiny_patch16_224", "--model-kwargs", "patch_size=8", "embed_dim=128", "depth=4",
            "num_heads=4", "--img-size", "32", "-b", "64", "--opt", "adamw", "--lr", "1e-3", "--weight-decay",
            "0.05", "--sched", "none", "--smoothing", "0.1", "--color-jitter", "0", "--scale", "0.75", "1.0",
            "--ratio", "0.9", "1.1", "--hflip", "0.5"]
    args = parse("pretrain", argv)
    step = step_rate(args)
    model = factory.create(model_spec(args), 100)
    data_options = data_spec(args)
    cfg = transforms.data_config(data_options.inputs, model)
    with tempfile.TemporaryDirectory() as root:
        per_class = o.demo_images // 100
        db = registry.create("fractaldb", classes=100, instances=per_class, size=64, seed=0, pad=2, iterations=16000,
                             draw_type="point_gray")
        for cls in range(100):
            os.makedirs(os.path.join(root, f"{cls:05d}"))
            for i, img in enumerate(db.render(cls, db.class_params(cls), range(per_class))):
                with open(os.path.join(root, f"{cls:05d}", f"{i:04d}.png"), "wb") as f:
                    f.write(png.encode(img))
        print(f"3. demo pre-training (FractalDB 64 px trained at 32, {100 * per_class} images, batch 64): "
              f"engine step on CPU {step:7.1f} img/s (1 thread, CPU time); -j 0 rows in CPU time of the process, -j 2 rows in wall time")
        for label, cached, gpu, workers in (("files, timm CPU (before)", False, False, 0),
                                            ("files, crop first", False, False, 0),
                                            ("--cache-images, crop first", True, False, 0),
                                            ("--cache-images, crop first", True, False, 2),
                                            ("--cache-images --gpu-augment", True, True, 0),
                                            ("--cache-images --gpu-augment", True, True, 2)):
            ds = ImageFolder(root, transforms.train_transform(data_options.augment, cfg))
            collate, augment = None, None
            if cached:
                ds.cache = cache.for_folder([p for p, _ in ds.samples], "on", 2, log=lambda _: None)
            if gpu:
                spec = AugmentSpec.from_args(args, cfg)
                ds.pixel_transform = FolderInput(source_size(ds, spec.size), spec)
                collate, augment = collate_folder_input, DeviceAugment(spec, "cpu")
            elif "crop first" in label:
                ds.pixel_transform = transforms.crop_first(ds.transform)
            else:  # the loader before: PIL open + convert("RGB") + timm's transform
                ds.pixels = lambda i, ds=ds: np.asarray(Image.open(ds.samples[i][0]).convert("RGB"))
            rate = loader_rate(ds, workers, collate)
            extra = ""
            if augment is not None:
                batch = next(iter(torch.utils.data.DataLoader(ds, 64, collate_fn=collate)))[0]
                start = time.process_time()
                for _ in range(5):
                    augment(batch)
                device = 5 * 64 / (time.process_time() - start)
                both = 1 / (1 / rate + 1 / device) if not workers else min(rate, device)
                extra = f"; device half on this CPU {device:7.1f} img/s; together {both:7.1f} = {both / step:4.2f}x"
            print(f"   {label:<40} -j {workers}: {rate:8.1f} img/s = {rate / step:4.2f}x the step{extra}")
            if cached and not gpu and not workers:
                seeding_part(ds, step, rate)


class SeededBefore(samplers.Seeded):
    """The engine's per-sample seeding before issue #17: torch.manual_seed on top of today's seeding."""

    def __getitem__(self, item):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item[1])
            return super().__getitem__(item)


def seeding_part(ds, step: float, bare: float) -> None:
    """The cached loader (-j 0) wrapped as the engine wraps it: Resumable sampler, per-sample seeds. `bare`: the
    same loader's images/s without the wrapper."""
    rates = {}
    for label, wrap in (("before (torch.manual_seed)", SeededBefore), ("now (CPU generator)", samplers.Seeded)):
        sampler = samplers.Resumable(torch.utils.data.RandomSampler(ds), seed=0)
        rates[label] = loader_rate(wrap(ds), 0, None, sampler)
        print(f"   {'engine seeding, ' + label:<40} -j 0: {rates[label]:8.1f} img/s = {rates[label] / step:4.2f}x "
              f"the step")
    before, now = rates.values()
    print(f"   the engine's seeding costs {1e3 / now - 1e3 / bare:.3f} ms an image now, {1e3 / before - 1e3 / bare:.3f} "
          f"before; the loader with it: {now / before:.2f}x the images/s")


def loader_rate(ds, workers: int, collate, sampler=None) -> float:
    """Images/s the DataLoader delivers: CPU time of this process with -j 0, wall time with workers."""
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=sampler is None, sampler=sampler,
                                         num_workers=workers, drop_last=True, collate_fn=collate)
    it = iter(loader)
    next(it)
    clock = time.perf_counter if workers else time.process_time  # workers: wall time of the 2 processes
    start, seen = clock(), 0
    for _ in it:
        seen += 64
    return seen / (clock() - start)


def main():
    o = options()
    torch.set_num_threads(1)
    files = {name: render(name, o.images) for name in DATABASES}
    print(f"threads 1, {o.images} images per database, best of {o.repeats}, process CPU time")
    decode_part(files, o.repeats)
    training_part(files, o.repeats)
    if not o.skip_demo:
        demo_part(o)


if __name__ == "__main__":
    main()
