"""The clustering SSL methods' effect over seeds, on a CPU, with scikit-learn's digits (32 px) as the target.

Per seed s, `fdsl deepercluster` trains the same small VGG16 trunk (width 1/4, Sobel input, 32 px) with the same
recipe (k sub-clusters, SGD lr 0.05, re-clustering every REASSIGNMENT epochs, EPOCH_IMAGES images per epoch):

  deepcluster              DeepCluster on the 1,000 training digits   (--super_classes 1 --rotnet false)
  rotnet                   RotNet on them                            (--super_classes 4 --k 1 --rotnet true)
  deepercluster            DeeperCluster on them                     (--super_classes S --rotnet true, S > 4)
  deepercluster_fractaldb  DeeperCluster on a small FractalDB        (100 classes x 20 images, 32 px: no curated
                           photos, no digits)

and `fdsl eval-linear` probes conv layer CONV of each trunk, and of a random-init trunk, the same way: trained on
the 1,000 training digits, tested on the 797 test digits after the last epoch (no selection on the test
digits). Then WORK/ssl_effect.{md,csv,png}: probe top-1 per seed, mean +- std, and the gain over the random-init
trunk paired by seed.

    python exe_scripts/ssl_effect.py WORK [--seeds 0 1 2] [--epochs 10] [--quick]

Default sizes: about 610 CPU seconds for 3 seeds (4 trunks x 10 epochs, 5 probes x 6 epochs per seed), so
10.4 minutes on one core (as effect.sh runs it) or about 6 on 2; --quick: under a minute. The trained trunks
start from the published skeleton seed's init (the same for every seed; the seeds change the data order, crops
and k-means), the random-init trunk from the probe's seed. A re-run skips finished runs (their last.pth.tar and .complete); WORK remembers its sizes and
refuses others (give another WORK). Logs: WORK/logs/.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its sibling scripts, and the fdsl of this checkout
from _effect_common import Pool, check_sizes
from export_digits import export

from fdsl.study.aggregate import seeds_table

# row -> (label, data: digits or fractaldb, deepercluster flags beyond the shared recipe)
METHODS = {
    "deepcluster": ("DeepCluster on digits", "digits",
                    lambda a: ["--super_classes", 1, "--rotnet", "false", "--k", a.k]),
    "rotnet": ("RotNet on digits", "digits", lambda a: ["--super_classes", 4, "--rotnet", "true", "--k", 1]),
    "deepercluster": ("DeeperCluster on digits", "digits",
                      lambda a: ["--super_classes", a.super_classes, "--rotnet", "true", "--k", a.k]),
    "deepercluster_fractaldb": ("DeeperCluster on FractalDB", "fractaldb",
                                lambda a: ["--super_classes", a.super_classes, "--rotnet", "true", "--k", a.k]),
}
LABELS = {"random": "random-init trunk", **{row: label for row, (label, _, _) in METHODS.items()}}
QUICK = {"epochs": 1, "reassignment": 1, "epoch_images": 128, "probe_epochs": 1, "k": 8, "super_classes": 8,
         "fractal_classes": 10, "fractal_instances": 10, "digits_per_class": 20}
SIZES = ("rows", "epochs", "reassignment", "epoch_images", "k", "super_classes", "conv", "probe_epochs", "lr",
         "probe_lr", "fractal_classes", "fractal_instances", "digits_per_class")


def options(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=list(METHODS), choices=list(METHODS), help="trained trunks")
    p.add_argument("--epochs", type=int, default=10, help="epochs of each clustering method")
    p.add_argument("--reassignment", type=int, default=2, help="re-cluster every N epochs")
    p.add_argument("--epoch-images", type=int, default=1000,
                   help="images per epoch, the same for every method and data set (1,000 = the training digits)")
    p.add_argument("--k", type=int, default=30, help="clusters in all (DeeperCluster: k / super-clusters each)")
    p.add_argument("--super-classes", type=int, default=8, help="DeeperCluster: 4 rotations x S/4 super-clusters")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of the clustering methods")
    p.add_argument("--conv", type=int, default=10, help="VGG16 conv layer probed (1..13)")
    p.add_argument("--probe-epochs", type=int, default=6, help="linear-probe epochs on the training digits")
    p.add_argument("--probe-lr", type=float, default=0.01)
    p.add_argument("--fractal-classes", type=int, default=100)
    p.add_argument("--fractal-instances", type=int, default=20)
    p.add_argument("--digits-per-class", type=int, default=0,
                   help="training digits per class (0: all 1,000; the 797 test digits always)")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs at a time, each with cores / JOBS torch threads (2 on a 2-core machine: 1 thread each)")
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (flags given still win): "
                   + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)
    if args.super_classes % 4 or args.super_classes <= 4 or args.k % (args.super_classes // 4):
        p.error("--super-classes must be a multiple of 4 above 4 (DeeperCluster: 2+ super-clusters), and --k a "
                "multiple of super-classes / 4")
    return args


TINY = ["--arch", "vgg16", "--width", "0.25", "--img_size", "32", "--sobel", "true", "--workers", "0",
        "--log_interval", "1000", "--save_every", "0", "--resume", "auto"]


def finished(run: str) -> bool:
    return os.path.isfile(os.path.join(run, ".complete")) and os.path.isfile(os.path.join(run, "last.pth.tar"))


def mark(run: str):
    return lambda ok: ok and open(os.path.join(run, ".complete"), "w").close()


def data(work: str, pool: Pool, args) -> dict[str, str]:
    digits = os.path.join(work, "digits")
    if not os.path.isfile(os.path.join(digits, ".complete")):
        export(digits, 32, args.digits_per_class or None)
        open(os.path.join(digits, ".complete"), "w").close()
    db = os.path.join(work, "fractaldb")
    done = os.path.join(db, ".complete")
    if "deepercluster_fractaldb" in args.rows and not os.path.isfile(done):
        pool.run(f"rendering FractalDB ({args.fractal_classes} classes x {args.fractal_instances} images, 32 px)",
                 [("render", ["render", "fractaldb", "--out", db, "--classes", args.fractal_classes, "--instances",
                              args.fractal_instances, "--size", 32, "--pad", 1, "--iterations", 4000,
                              "--draw-type", "point_gray", "--workers", 1, "--no-progress"],
                   lambda ok: ok and open(done, "w").close())])
    return {"digits": os.path.join(digits, "train"), "fractaldb": db, "probe": digits}


def train_tasks(work: str, paths: dict, args) -> list:
    tasks = []
    for seed in args.seeds:
        for row in args.rows:
            _, source, flags = METHODS[row]
            run = os.path.join(work, "runs", f"{row}_s{seed}")
            if finished(run):
                continue
            tasks.append((f"{row}_s{seed}", [
                "deepercluster", "--data_path", paths[source], *TINY, *flags(args), "--epoch_size", args.epoch_images,
                "--dim_pca", 64, "--batch_size", 64, "--lr", args.lr, "--nepochs", args.epochs, "--reassignment",
                args.reassignment, "--niter", 10, "--seed", seed, "--dump_path", run], mark(run)))
    return tasks


def probe_tasks(work: str, paths: dict, args) -> list:
    tasks = []
    for seed in args.seeds:
        for row in ["random", *args.rows]:
            run = os.path.join(work, "runs", f"probe_{row}_s{seed}")
            if finished(run):
                continue
            weights = [] if row == "random" else ["--pretrained", os.path.join(work, "runs", f"{row}_s{seed}",
                                                                              "last.pth.tar")]
            tasks.append((f"probe_{row}_s{seed}", [
                "eval-linear", "--data_path", paths["probe"], *TINY, *weights, "--conv", args.conv, "--nepochs",
                args.probe_epochs, "--batch_size", 64, "--lr", args.probe_lr, "--wd", 1e-5, "--seed", seed,
                "--dump_path", run], mark(run)))
    return tasks


def collect(work: str, seeds: list[int], rows: list[str]) -> dict[str, dict[int, float]]:
    """{row: {seed: probe top-1 after the last epoch}} of the finished probes."""
    out: dict[str, dict[int, float]] = {}
    for row in ["random", *rows]:
        for seed in seeds:
            run = os.path.join(work, "runs", f"probe_{row}_s{seed}")
            if finished(run):
                with open(os.path.join(run, "summary.csv")) as f:
                    out.setdefault(row, {})[seed] = float(list(csv.DictReader(f))[-1]["eval_top1"])
    return out


def report(work: str, args) -> str:
    results = collect(work, args.seeds, args.rows)
    title = (f"Clustering SSL on scikit-learn digits (VGG16 width 1/4 + Sobel, 32 px; {args.epochs} epochs of "
             f"{args.epoch_images} images, k={args.k}, DeeperCluster {args.super_classes} super-classes; linear probe "
             f"on conv{args.conv}, {args.probe_epochs} epochs, test top-1 on the 797 test digits; seeds "
             f"{' '.join(map(str, args.seeds))})")
    labels = {r: LABELS[r] for r in ["random", *args.rows]}
    text = "\n".join([title, "", *seeds_table(results, labels, {r: "random" for r in args.rows})])
    with open(os.path.join(work, "ssl_effect.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(work, "ssl_effect.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["row", "seed", "probe_top1", "gain_over_random"])
        for row in labels:
            for s, top1 in sorted(results.get(row, {}).items()):
                base = results.get("random", {}).get(s)
                out.writerow([row, s, round(top1, 2), "" if row == "random" or base is None else round(top1 - base, 2)])
    chart(results, labels, os.path.join(work, "ssl_effect.png"), title)
    return text


def chart(results: dict, labels: dict, path: str, title: str) -> None:
    """The study report's bar chart; the random-init trunk greyed as a baseline."""
    from fdsl.study.report import bar_chart

    bars = [(label, [v for _, v in sorted(results[r].items())], r == "random")
            for r, label in labels.items() if results.get(r)]
    if bars:
        bar_chart([(title.split(";")[0] + "; bars: mean ± std, dots: seeds", "digits top-1 (%)", bars)], path)


def main(argv=None) -> None:
    args = options(argv)
    work = os.path.abspath(args.work)
    check_sizes(work, {k: getattr(args, k) for k in SIZES})
    started = time.perf_counter()
    with Pool(work, args.jobs) as pool:
        paths = data(work, pool, args)
        pool.run(f"{', '.join(args.rows)}: {args.epochs} epochs each (seeds {' '.join(map(str, args.seeds))})",
                 train_tasks(work, paths, args))
        pool.run(f"linear probes on conv{args.conv}, {args.probe_epochs} epochs", probe_tasks(work, paths, args))
    print()
    print(report(work, args))
    print(f"wrote {os.path.join(work, 'ssl_effect')}.md, .csv, .png ({(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
