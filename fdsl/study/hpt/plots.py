"""`fdsl hpt plot ROOT`: the standard HPT figures, PNG and PDF, under ROOT/plots/.

- linear-eval/<dataset>_linear_eval: accuracy vs pre-training steps (log x), one line per base (mean over
  seeds, the band spans the seeds), a dashed line per base at its direct-transfer value (the 0-iter
  evaluation of the raw base), a red x per HPT-BN budget.
- finetune/<dataset>_finetune-<subset>: per label subset, same lines and bands, symlog x (0 steps = the
  raw base).
Where several variants (lrs, schedules) were run, each point keeps the variant with the best test value, as
published (plot-results.py), or with `--selection fixed` the one with the best validation value.
- knn/<dataset>_knn: the k-NN probe logged at every pre-training checkpoint vs steps (symlog x: step 0 is
  the base itself), one line per run:
  "the same accuracy in many fewer steps from a good base" reads off this one plot.
"""
from __future__ import annotations

import glob
import os
from collections import defaultdict

from fdsl.ssl.hpt.records import read_jsonl

LABELS = {"no": "random init", "none": "random init", "moco_v2_800ep": "MoCo ImageNet init",
          "imagenet_r50_supervised": "supervised ImageNet init"}


def _label(base: str, method: str) -> str:
    text = LABELS.get(base, base)
    return text + (" (BYOL)" if method == "byol" else "")


def _stats(values: list[float]) -> tuple[float, float, float]:
    return sum(values) / len(values), min(values), max(values)


def best_variants(rows: list[dict], selection: str = "published") -> list[dict]:
    """Per (subset, base, source, method, HPT-BN, steps, seed), one run of the variants (lr, schedule):
    published (plot-results.py) the one with the best test value; fixed: the best validation value (model
    selection on val, the test value reported)."""
    key_of = "result" if selection == "published" else "val"
    best: dict = {}
    for r in rows:
        key = (r["subset"], r["basetrain"], r["pretrain_data"], r["method"], r["bn_only"], r["steps"], r["sample"])
        if key not in best or (r[key_of] or float("-inf")) > (best[key][key_of] or float("-inf")):
            best[key] = r
    return list(best.values())


def _lines(ax, groups: dict, symlog: bool) -> None:
    """groups: {(base, method): {steps: [values over seeds]}} -> one line + band each."""
    for (base, method), by_steps in sorted(groups.items()):
        xs = sorted(by_steps)
        stats = [_stats(by_steps[x]) for x in xs]
        line, = ax.plot(xs, [s[0] for s in stats], marker="o", label=_label(base, method))
        if any(len(by_steps[x]) > 1 for x in xs):
            ax.fill_between(xs, [s[1] for s in stats], [s[2] for s in stats], alpha=0.2, color=line.get_color())
    if symlog:
        ax.set_xscale("symlog", linthresh=10)
    else:
        ax.set_xscale("log")


def _save(fig, path_stem: str) -> list[str]:
    os.makedirs(os.path.dirname(path_stem), exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        path = f"{path_stem}.{ext}"
        fig.savefig(path, bbox_inches="tight", dpi=120)
        out.append(path)
    return out


def linear_plot(records: list[dict], dataset: str, out_dir: str, selection: str = "published") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = best_variants([r for r in records if r["result_type"] == "linear-eval" and r["complete"]
                          and r["result"] is not None], selection)
    if not rows:
        return []
    groups: dict = defaultdict(lambda: defaultdict(list))
    direct: dict = defaultdict(list)
    bn: dict = defaultdict(list)
    for r in rows:
        value = r["result"]
        if r["steps"] == 0:
            direct[r["basetrain"]].append(value)
        elif r["bn_only"]:
            bn[(r["basetrain"], r["steps"])].append(value)
        else:
            groups[(r["basetrain"], r["method"])][r["steps"]].append(value)
    fig, ax = plt.subplots(figsize=(6, 4))
    _lines(ax, groups, symlog=False)
    for base, values in sorted(direct.items()):
        ax.axhline(sum(values) / len(values), linestyle="--", color="grey", linewidth=1)
        ax.annotate(f"{_label(base, 'moco')}, direct transfer", (0.01, sum(values) / len(values)),
                    xycoords=("axes fraction", "data"), fontsize=7, va="bottom", color="grey")
    for i, ((base, steps), values) in enumerate(sorted(bn.items())):
        ax.scatter([steps], [max(values)], marker="x", color="red", s=60, zorder=5,
                   label="HPT-BN" if i == 0 else None)
    ax.set_xlabel("pre-training steps")
    ax.set_ylabel("linear probe (test at best val)")
    ax.set_title(f"{dataset}: linear evaluation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths = _save(fig, os.path.join(out_dir, "linear-eval", f"{dataset}_linear_eval"))
    plt.close(fig)
    return paths


def finetune_plots(records: list[dict], dataset: str, out_dir: str, selection: str = "published") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = best_variants([r for r in records if r["result_type"] == "finetune" and r["complete"]
                          and r["result"] is not None and not r["bn_only"]], selection)
    paths = []
    for subset in sorted({r["subset"] for r in rows}):
        groups: dict = defaultdict(lambda: defaultdict(list))
        for r in rows:
            if r["subset"] == subset:
                groups[(r["basetrain"], r["method"])][r["steps"]].append(r["result"])
        fig, ax = plt.subplots(figsize=(6, 4))
        _lines(ax, groups, symlog=True)
        ax.set_xlabel("pre-training steps")
        ax.set_ylabel("fine-tuned (test at best val, best lr/schedule)")
        ax.set_title(f"{dataset}: fine-tuning, {subset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths += _save(fig, os.path.join(out_dir, "finetune", f"{dataset}_finetune-{subset}"))
        plt.close(fig)
    return paths


def knn_plot(root: str, dataset: str, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(glob.glob(os.path.join(root, "work", "pretrain", "*_basetrain", "*-iters", "knn.jsonl")))
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    first = []
    for path in runs:
        rows = [r for r in read_jsonl(path) if r.get("knn_top1") is not None]
        if not rows:
            continue
        tag = os.path.basename(os.path.dirname(path))
        base = os.path.basename(os.path.dirname(os.path.dirname(path))).removesuffix("_basetrain")
        ax.plot([r["step"] for r in rows], [r["knn_top1"] for r in rows], marker=".",
                label=f"{_label(base, 'moco')}, {tag}")
        first += [r["step"] for r in rows if r["step"] > 0][:1]
    ax.set_xscale("symlog", linthresh=min(first or [1]))  # step 0 (the base itself) stays on the axis
    ax.set_xlabel("pre-training steps")
    ax.set_ylabel("k-NN top-1 on val")
    ax.set_title(f"{dataset}: k-NN probe during pre-training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    paths = _save(fig, os.path.join(out_dir, "knn", f"{dataset}_knn"))
    plt.close(fig)
    return paths
