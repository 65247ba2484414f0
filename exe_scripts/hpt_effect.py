"""The HPT effect over seeds, on a CPU, with scikit-learn's digits (32 px) as the target data set.

Per seed s (the base, the SSL runs and the probes all use seed s; the FractalDB images are rendered once):
  1. a supervised `fdsl pretrain` of a small ResNet (resnet10t) on a small FractalDB (100 classes x 40 images,
     32 px): the base, WORK/s<s>/fractaldb.pth.tar;
  2. an HPT project WORK/s<s>/hpt (`fdsl hpt project`; its jobs run as `fdsl hpt run` runs them, with its
     .proc/.done markers, so `fdsl hpt run WORK/s<s>/hpt --list -a` shows them): MoCo v2 and BYOL on the
     1,000 training digits for STEPS optimiser steps of BATCH images each (BYOL without the published doubling
     of the budget), from random init (HPT's published OpenSelfSup-style init) and from the base, with the k-NN
     probe (k=20, on val) logged every KNN_EVERY steps; linear probes (frozen, `linear: seed: s`, test at the
     best val of the second half, lr chosen on val when several) of the six backbones: random init and the base
     without SSL, and the four SSL runs.
Then WORK/hpt_effect.{md,csv,png}: linear-probe test top-1 per seed, mean +- std, the gain of each FractalDB row
over its random-init counterpart paired by seed; and HPT's claim "a good base reaches the same k-NN accuracy
in fewer steps" read off the k-NN curves: per seed, the first step (linear between logged points) at which
FractalDB + SSL reaches the k-NN top-1 that random init + SSL has at its last step; steps saved = STEPS minus
that step ("never" if it is not reached). The chart: k-NN top-1 vs step, mean over seeds, min-max band.

    python exe_scripts/hpt_effect.py WORK [--seeds 0 1 2] [--steps 48] [--quick]

Default sizes: about 620 CPU seconds for 3 seeds (base 24, SSL 4 x 34, probes 6 x 7 per seed), so 10.6 minutes
on one core (as effect.sh runs it) or about 6 on 2; --quick: about a minute. The probes are short at these sizes
(still rising at the last step): they rank backbones, they do not measure converged linear accuracy
(hpt_digits.py's probe: --probe-steps 150 --probe-lrs 0.03 0.3 3). A re-run skips what is finished (the runner's .done markers, the base's link); WORK
remembers its sizes and refuses others (give another WORK). Digits: images 0-999 train (SSL and probe
training), 1000-1398 val (k-NN probe, probe lr and step), 1399-1796 test. Logs: WORK/logs/.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # its sibling scripts, and the fdsl of this checkout
from _effect_common import Pool, check_sizes
from hpt_digits import export_digits

from fdsl.study.aggregate import seeds_table, spread

BASE = "fractaldb"  # the base's file stem: its name in the HPT records (<base>_basetrain)
# row -> (basetrain, method, SSL?) and the random-init row a FractalDB row is paired with
ROWS = {
    "random": ("no", "moco", False), "fractaldb": (BASE, "moco", False),
    "random+moco": ("no", "moco", True), "fractaldb+moco": (BASE, "moco", True),
    "random+byol": ("no", "byol", True), "fractaldb+byol": (BASE, "byol", True),
}
LABELS = {"random": "random init, no SSL", "fractaldb": "FractalDB base, no SSL",
          "random+moco": "random init + MoCo v2", "fractaldb+moco": "FractalDB + MoCo v2",
          "random+byol": "random init + BYOL", "fractaldb+byol": "FractalDB + BYOL"}
PAIRED = {"fractaldb": "random", "fractaldb+moco": "random+moco", "fractaldb+byol": "random+byol"}
QUICK = {"steps": 12, "knn_every": 4, "fractal_epochs": 1, "classes": 10, "instances": 10, "probe_steps": 12,
         "probe_evals": 2, "probe_lrs": [0.3], "batch": 32, "queue": 256, "train_images": 200, "eval_images": 100}


def options(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["moco", "byol"], choices=["moco", "byol"])
    p.add_argument("--steps", type=int, default=48, help="SSL optimiser steps on the digits (each of --batch)")
    p.add_argument("--knn-every", type=int, default=8, help="steps between k-NN probes during SSL")
    p.add_argument("--batch", type=int, default=64, help="SSL batch (MoCo and BYOL alike, no accumulation)")
    p.add_argument("--queue", type=int, default=4096, help="MoCo queue (a multiple of --batch)")
    p.add_argument("--arch", default="resnet10t", help="timm ResNet (the same for the FractalDB base)")
    p.add_argument("--random-init", default="auto", help="HPT random_init: auto (OpenSelfSup's), model (timm's)")
    p.add_argument("--classes", type=int, default=100, help="FractalDB classes")
    p.add_argument("--instances", type=int, default=40, help="FractalDB images per class")
    p.add_argument("--fractal-epochs", type=int, default=2, help="supervised epochs of the base on FractalDB")
    p.add_argument("--probe-steps", type=int, default=60, help="linear-probe steps (of 64)")
    p.add_argument("--probe-evals", type=int, default=3, help="val+test evaluations per linear probe")
    p.add_argument("--train-images", type=int, default=0, help="the first N training digits only (0: all 1,000)")
    p.add_argument("--eval-images", type=int, default=0, help="the first N val and N test digits only (0: all)")
    p.add_argument("--jobs", type=int, default=2,
                   help="runs at a time, each with cores / JOBS torch threads (2 on a 2-core machine: 1 thread each)")
    p.add_argument("--probe-lrs", type=float, nargs="+", default=[0.3],
                   help="linear-probe lrs; several: swept per backbone, the best val kept (hpt_digits.py: 0.03 0.3 3)")
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (flags given still win): "
                   + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(**QUICK)
    return p.parse_args(argv)


SIZES = ("train_images", "eval_images", "methods", "steps", "knn_every", "batch", "queue", "arch", "random_init",
         "classes", "instances", "fractal_epochs", "probe_steps", "probe_evals", "probe_lrs")


def subset_lists(digits: str, args) -> None:
    """DIGITS/{train,val,test}_used.txt: the first --train-images / --eval-images lines of each list (the digits
    come in a near-cyclic class order, so the first N are about balanced)."""
    for name, n in (("train", args.train_images), ("val", args.eval_images), ("test", args.eval_images)):
        with open(os.path.join(digits, f"{name}.txt")) as f:
            lines = f.readlines()
        with open(os.path.join(digits, f"{name}_used.txt"), "w") as f:
            f.writelines(lines[:n] if n else lines)


def fractaldb(work: str, pool: Pool, args) -> str:
    db = os.path.join(work, "fractaldb")
    done = os.path.join(db, ".complete")
    if not os.path.isfile(done):
        pool.run(f"rendering FractalDB ({args.classes} classes x {args.instances} images, 32 px)", [("render", [
            "render", "fractaldb", "--out", db, "--classes", args.classes, "--instances", args.instances,
            "--size", 32, "--pad", 1, "--iterations", 4000, "--draw-type", "point_gray", "--workers", 1,
            "--no-progress"], lambda ok: ok and open(done, "w").close())])
    return db


def base_link(work: str, seed: int) -> str:
    return os.path.join(work, f"s{seed}", f"{BASE}.pth.tar")


def bases(work: str, db: str, pool: Pool, args) -> None:
    """The supervised FractalDB base of each seed; its link is made once the run finished."""
    def link(seed: int):
        return lambda ok: ok and os.symlink(os.path.join(work, f"s{seed}", "runs", BASE, "last.pth.tar"),
                                            base_link(work, seed))

    todo = [s for s in args.seeds if not os.path.isfile(base_link(work, s))]
    pool.run(f"FractalDB bases, {args.fractal_epochs} supervised epochs (seeds {todo})", [(f"s{s}_base", [
        "pretrain", db, "--model", args.arch, "--img-size", 32, "-b", 64, "--opt", "sgd", "--lr", 0.1,
        "--momentum", 0.9, "--weight-decay", 1e-4, "--sched", "cosine_iter", "--warmup-epochs", 1,
        "--epochs", args.fractal_epochs, "--hflip", 0.5, "--color-jitter", 0, "--smoothing", 0.1, "-j", 0,
        "--eval-metric", "loss", "--log-interval", 20, "--seed", s, "--output", os.path.join(work, f"s{s}", "runs"),
        "--experiment", BASE, "--resume", "auto"], link(s)) for s in todo])


def project(work: str, digits: str, seed: int, args) -> str:
    import yaml

    from fdsl.study.hpt.project import generate

    cfg = {
        "shortname": "digits", "arch": args.arch, "crop_size": 32, "test_precrop_size": 32,
        "data": {"root": digits, "pretrain_list": "train_used.txt", "train_list": "train_used.txt",
                 "val_list": "val_used.txt", "test_list": "test_used.txt", "num_classes": 10,
                 "mean": [0.25] * 3, "std": [0.35] * 3},
        "random_init": args.random_init, "base_weights": [base_link(work, seed), ""], "bt_iters": [args.steps],
        "no_bt_iters": [args.steps], "methods": list(args.methods),
        "published_schedule": False,  # BYOL trains STEPS steps, as MoCo does (published: 2 x STEPS)
        "pretrain": {"seed": seed, "batch_size": args.batch, "accum_steps": 1, "queue_size": args.queue,
                     "bn_group_size": min(32, args.batch), "workers": 0, "epoch_updates": args.knn_every,
                     "log_interval": 20, "aug": "full"},
        "linear": {"iters": args.probe_steps, "lr": list(args.probe_lrs), "reruns": 1, "seed": seed,
                   "batch_size": 64, "eval_interval": max(1, args.probe_steps // args.probe_evals), "workers": 0},
        "finetune": {"num_train_labels": [], "by_iter": 0, "by_epoch": 0},
    }
    path = os.path.join(work, f"s{seed}", "digits.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    root = os.path.join(work, f"s{seed}", "hpt")
    generate(path, root, log=lambda _: None)
    for stale in glob.glob(os.path.join(root, "work", "**", "*.proc"), recursive=True):
        os.remove(stale)  # left by a killed run of this script (its only runner): the job starts again
    return root


def hpt_jobs(roots: list[str], stage: str) -> list:
    """The jobs of `fdsl hpt run ROOT --stage STAGE` (every linear-eval seed) that no runner has done or holds,
    claimed with the runner's markers (W.proc, then W.done when it succeeded), as pool tasks."""
    from fdsl.study.hpt import runner

    tasks = []
    for root in roots:
        jobs = runner.pretrain_jobs(root) if stage == "pretrain" else runner.eval_jobs(root, stage, all_seeds=True)
        seed = os.path.basename(os.path.dirname(root))
        for job in jobs:
            if runner.claim(job):
                tasks.append((f"{seed}_{job.name.replace('/', '_')}", job.argv(),
                              lambda ok, job=job: runner.finish(job, ok)))
    return tasks


def run_all(work: str, digits: str, pool: Pool, args) -> None:
    db = fractaldb(work, pool, args)
    bases(work, db, pool, args)
    roots = [project(work, digits, s, args) for s in args.seeds]
    pool.run(f"{' and '.join(args.methods)}, {args.steps} steps from random init and from FractalDB",
             hpt_jobs(roots, "pretrain"))
    pool.run(f"linear probes of {2 + 2 * len(args.methods)} backbones x {len(args.probe_lrs)} lr(s) per seed",
             hpt_jobs(roots, "linear"))


# --- reading the results ---------------------------------------------------------------------------------------

def steps_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first step at which a k-NN curve [(step, top1), ...] reaches `target`, linear between logged points;
    None if it never does."""
    curve = sorted(curve)
    if not curve:
        return None
    if curve[0][1] >= target:
        return float(curve[0][0])
    for (s0, a0), (s1, a1) in zip(curve, curve[1:]):
        if a1 >= target:  # a0 < target here
            return s0 + (target - a0) / (a1 - a0) * (s1 - s0)
    return None


def last(curve: list[tuple[float, float]]) -> float:
    """The top-1 of a k-NN curve at its last logged step."""
    return max(curve)[1]


def steps_saved(base_curve: list[tuple[float, float]], random_curve: list[tuple[float, float]]) -> float | None:
    """Steps the base saves to the k-NN top-1 random init reaches at its last step (None: never reached)."""
    final_step, target = max(random_curve)  # the point of the last step
    reached = steps_to_reach(base_curve, target)
    return None if reached is None else final_step - reached


def knn_curve(root: str, basetrain: str, method: str, steps: int) -> list[tuple[float, float]]:
    from fdsl.ssl.hpt.records import read_jsonl
    from fdsl.study.hpt.project import stage_tag

    tag = stage_tag(steps, method, False)
    path = os.path.join(root, "work", "pretrain", f"{basetrain}_basetrain", tag, "knn.jsonl")
    rows = read_jsonl(path) if os.path.isfile(path) else []
    return [(r["step"], r["knn_top1"]) for r in rows if r.get("knn_top1") is not None]


def collect(work: str, seeds: list[int], steps: int) -> tuple[dict, dict]:
    """({row: {seed: probe test top-1}}, {row: {seed: k-NN curve}}) of the finished runs."""
    import io

    from fdsl.study.hpt.plots import best_variants
    from fdsl.study.hpt.results import collect as hpt_collect

    probe: dict = {}
    curves: dict = {}
    for seed in seeds:
        root = os.path.join(work, f"s{seed}", "hpt")
        if not os.path.isdir(root):
            continue
        records = [r for r in hpt_collect(root, err=io.StringIO(), selection="fixed")
                   if r["result_type"] == "linear-eval" and r["complete"] and r["result"] is not None]
        by_key = {(r["basetrain"], r["method"], r["steps"]): r["result"] for r in best_variants(records, "fixed")}
        for row, (basetrain, method, ssl) in ROWS.items():
            value = by_key.get((basetrain, "moco", 0) if not ssl else (basetrain, method, steps))
            if value is not None:
                probe.setdefault(row, {})[seed] = value
            curve = knn_curve(root, basetrain, method, steps) if ssl else []
            if curve and curve[-1][0] >= steps:  # finished runs only
                curves.setdefault(row, {})[seed] = curve
    return probe, curves


def report(work: str, seeds: list[int], args) -> str:
    probe, curves = collect(work, seeds, args.steps)
    title = (f"HPT on scikit-learn digits ({args.arch}; SSL {args.steps} steps of {args.batch} images; linear probe "
             f"{args.probe_steps} steps, lr {' / '.join(map(str, args.probe_lrs))} chosen on val; test top-1, seeds "
             f"{' '.join(map(str, seeds))})")
    lines = [title, "", *seeds_table(probe, {r: LABELS[r] for r in ROWS}, PAIRED, "linear-probe top-1")]
    claim = (f"k-NN on val (k=20) during SSL: the step at which FractalDB + SSL first reaches what random init + "
             f"SSL reaches at step {args.steps} (linear between the points logged every {args.knn_every} steps); "
             f"steps saved = {args.steps} - that step")
    lines += ["", claim, "",
              ("| SSL | seeds | random init, k-NN at the last step | FractalDB reaches it at step "
               "| steps saved, mean ± std |"),
              "| --- | --- | --- | --- | --- |"]
    saved_by: dict = {}
    for method in args.methods:
        rand, frac = curves.get(f"random+{method}", {}), curves.get(f"fractaldb+{method}", {})
        ss = [s for s in sorted(rand) if s in frac]
        if not ss:
            continue
        reached = {s: steps_to_reach(frac[s], last(rand[s])) for s in ss}
        saved = {s: steps_saved(frac[s], rand[s]) for s in ss}
        saved_by[method] = saved
        done = [v for v in saved.values() if v is not None]
        never = [s for s in ss if saved[s] is None]
        text = spread(done, ".0f") if done else "never"
        if done and never:
            text += f" (seeds {', '.join(map(str, never))}: never)"
        lines.append(f"| {'MoCo v2' if method == 'moco' else 'BYOL'} | {len(ss)} | "
                     f"{' / '.join(f'{last(rand[s]):.1f}' for s in ss)} | "
                     f"{' / '.join('never' if reached[s] is None else f'{reached[s]:.0f}' for s in ss)} | {text} |")
    text = "\n".join(lines)
    with open(os.path.join(work, "hpt_effect.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(work, "hpt_effect.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["row", "seed", "probe_top1", "knn_final_top1", "steps_saved"])
        for row in ROWS:
            for s in sorted(set(probe.get(row, {})) | set(curves.get(row, {}))):
                curve = curves.get(row, {}).get(s)
                saved = saved_by.get(ROWS[row][1], {}).get(s, "") if row.startswith("fractaldb+") else ""
                top1 = probe.get(row, {}).get(s)
                out.writerow([row, s, "" if top1 is None else round(top1, 2), round(last(curve), 2) if curve else "",
                              "never" if saved is None else saved if saved == "" else round(saved, 1)])
    chart(curves, os.path.join(work, "hpt_effect.png"), args)
    return text


def chart(curves: dict, path: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    colours = {"moco": "#3b75af", "byol": "#c44e52"}
    for row, by_seed in curves.items():
        steps = sorted({s for c in by_seed.values() for s, _ in c})
        values = np.array([[np.interp(x, *zip(*sorted(c))) for x in steps] for c in by_seed.values()])
        method = ROWS[row][1]
        style = "-" if row.startswith("fractaldb") else "--"
        label = f"{LABELS[row]} ({len(by_seed)} seed{'s' if len(by_seed) > 1 else ''})"
        ax.plot(steps, values.mean(0), style, marker=".", color=colours[method], label=label)
        ax.fill_between(steps, values.min(0), values.max(0), color=colours[method], alpha=0.15, linewidth=0)
    ax.set_xlabel("SSL steps on the digits (step 0: the starting backbone)")
    ax.set_ylabel("k-NN top-1 on val (%)")
    ax.set_title(f"k-NN during SSL ({args.arch}); lines: mean over seeds, bands: min-max", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, handlelength=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    args = options(argv)
    work = os.path.abspath(args.work)
    check_sizes(work, {k: getattr(args, k) for k in SIZES})
    started = time.perf_counter()
    digits = os.path.join(work, "digits")
    export_digits(digits)
    subset_lists(digits, args)
    with Pool(work, args.jobs) as pool:
        run_all(work, digits, pool, args)
    print()
    print(report(work, args.seeds, args))
    print(f"wrote {os.path.join(work, 'hpt_effect')}.md, .csv, .png ({(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
