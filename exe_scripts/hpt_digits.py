"""HPT end to end on a CPU, with scikit-learn's digits (32 px) as the target data set:

  1. a small FractalDB (100 classes x 40 images, 32 px) and a supervised `fdsl pretrain` of a small ResNet
     on it: the base checkpoint;
  2. an HPT project (`fdsl hpt project`): MoCo v2 on the digits for STEPS optimiser steps, from random init
     and from the FractalDB base; `fdsl hpt run` pre-trains both and linear-probes them and the two raw
     bases (random init, FractalDB), `fdsl hpt aggregate` and `fdsl hpt plot` collect the results.

    PYTHONPATH=. python exe_scripts/hpt_digits.py WORK [--steps 300] [--arch resnet10t]

Digits: images 0-999 are the training set (pre-training and probe training), 1000-1398 validation,
1399-1796 test. The probe: frozen backbone, Linear head, SGD, lr x 0.1 at 1/3 and 2/3, test at best val; the lr is swept
(features of random init and of the FractalDB model differ 25x in scale) and chosen on val.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np
import yaml
from PIL import Image
from sklearn.datasets import load_digits


def sh(*argv) -> None:
    print("$ " + " ".join(str(a) for a in argv), flush=True)
    subprocess.run([str(a) for a in argv], check=True)


def fdsl(*argv) -> None:
    sh(sys.executable, "-m", "fdsl", *argv)


def export_digits(root: str, size: int = 32) -> None:
    """root/images/<i>.png and root/{train,val,test}.txt (`images/<i>.png <digit>`)."""
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    lines = []
    for i, (img, label) in enumerate(zip(images, digits.target)):
        path = os.path.join(root, "images", f"{i:04d}.png")
        if not os.path.isfile(path):
            Image.fromarray(img).resize((size, size), Image.BICUBIC).convert("RGB").save(path)
        lines.append(f"images/{i:04d}.png {label}\n")
    for name, part in (("train", lines[:1000]), ("val", lines[1000:1399]), ("test", lines[1399:])):
        with open(os.path.join(root, f"{name}.txt"), "w") as f:
            f.writelines(part)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work")
    p.add_argument("--steps", type=int, default=300, help="MoCo v2 optimiser steps on the digits")
    p.add_argument("--arch", default="resnet10t", help="timm ResNet (the same for the FractalDB base)")
    p.add_argument("--fractal-epochs", type=int, default=5)
    p.add_argument("--probe-steps", type=int, default=150)
    p.add_argument("--probe-lrs", type=float, nargs="+", default=[0.03, 0.3, 3.0],
                   help="linear-probe lrs swept per backbone (feature scales differ by 25x); best val kept")
    args = p.parse_args()
    work = os.path.abspath(args.work)
    os.environ.setdefault("WANDB_MODE", "disabled")
    db = os.path.join(work, "fractaldb")
    if not os.path.isfile(os.path.join(db, "manifest.json")) or len(os.listdir(db)) < 100:
        fdsl("render", "fractaldb", "--out", db, "--classes", 100, "--instances", 40, "--size", 32, "--pad", 1,
             "--iterations", 4000, "--draw-type", "point_gray", "--workers", 2, "--no-progress")
    base = os.path.join(work, "fractaldb_supervised.pth.tar")  # the name the base goes by in the results
    if not os.path.isfile(base):
        fdsl("pretrain", db, "--model", args.arch, "--img-size", 32, "-b", 64, "--opt", "sgd", "--lr", 0.1,
             "--momentum", 0.9, "--weight-decay", 1e-4, "--sched", "cosine_iter", "--warmup-epochs", 1,
             "--epochs", args.fractal_epochs, "--hflip", 0.5, "--color-jitter", 0, "--smoothing", 0.1, "-j", 1,
             "--eval-metric", "loss", "--log-interval", 20, "--output", os.path.join(work, "runs"),
             "--experiment", "fractaldb", "--resume", "auto")
        os.symlink(os.path.join(work, "runs", "fractaldb", "last.pth.tar"), base)
    digits = os.path.join(work, "digits")
    export_digits(digits)
    project = {
        "shortname": "digits", "arch": args.arch, "crop_size": 32, "test_precrop_size": 32,
        "data": {"root": digits, "pretrain_list": "train.txt", "train_list": "train.txt", "val_list": "val.txt",
                 "test_list": "test.txt", "num_classes": 10, "mean": [0.25] * 3, "std": [0.35] * 3},
        "random_init": "model",  # the figures in docs/hpt.md were measured with timm's init
        "base_weights": [base, ""], "bt_iters": [args.steps], "no_bt_iters": [args.steps],
        "pretrain": {"batch_size": 64, "queue_size": 4096, "bn_group_size": 32, "workers": 1,
                     "epoch_updates": max(1, args.steps // 6), "log_interval": 20, "aug": "full"},
        "linear": {"iters": args.probe_steps, "lr": args.probe_lrs, "reruns": 1, "batch_size": 64,
                   "eval_interval": max(1, args.probe_steps // 6), "workers": 1},
        "finetune": {"num_train_labels": [], "by_iter": 0, "by_epoch": 0},
    }
    with open(os.path.join(work, "digits.yaml"), "w") as f:
        yaml.safe_dump(project, f, sort_keys=False)
    root = os.path.join(work, "hpt")
    fdsl("hpt", "project", os.path.join(work, "digits.yaml"), "--out", root)
    fdsl("hpt", "run", root, "--stage", "pretrain")
    fdsl("hpt", "run", root, "--stage", "linear")
    fdsl("hpt", "aggregate", root, "--selection", "fixed")  # an fdsl experiment: lr and step chosen on val
    fdsl("hpt", "plot", root, "--selection", "fixed")
    from fdsl.study.hpt.plots import best_variants
    from fdsl.study.hpt.results import load_results

    records = best_variants(load_results(os.path.join(root, "results", "digits_results.json")), "fixed")
    print(f"\nlinear probe on digits (test top-1 at best val, lr chosen on val; {args.arch}, {args.steps} "
          "MoCo v2 steps):")
    for r in sorted(records, key=lambda r: (r["basetrain"], r["steps"])):
        start = {"no": "random init", "fractaldb_supervised": "FractalDB (fdsl pretrain)"}.get(r["basetrain"],
                                                                                                r["basetrain"])
        what = f"{start} + MoCo v2 {r['steps']} steps" if r["steps"] else f"{start}, no MoCo"
        print(f"  {what:<48} {r['result']:.2f}  (val {r['val']:.2f}, {r['variant']})")
    for path in sorted(glob.glob(os.path.join(root, "work", "pretrain", "*", "*", "knn.jsonl"))):
        with open(path) as f:
            rows = [json.loads(line) for line in f]
        print(f"  k-NN during {os.path.relpath(path, root)}: "
              + ", ".join(f"{r['step']}:{r['knn_top1']:.1f}" for r in rows))


if __name__ == "__main__":
    main()
