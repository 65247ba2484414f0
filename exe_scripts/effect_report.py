"""Summarise the fine-tuning runs of effect.sh: one row per pre-training database, top-1 on digits over the seeds
(mean +- sample std), and the gain over scratch paired by seed. Prints a Markdown table, writes it with a CSV of
every run and a bar chart.

    python exe_scripts/effect_report.py RUNS_DIR [--out PREFIX]     (runs named ft_<row>_s<seed>)
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import statistics

LABELS = {"scratch": "from scratch", "scratch2x": "from scratch, 2x epochs", "fractaldb": "FractalDB",
          "ofdb2d": "2D-OFDB", "rcdb": "RCDB", "visualatom": "VisualAtom", "exfractaldb": "ExFractalDB",
          "onepfrac0.1": "1p-frac, delta 0.1", "onepfrac0.01": "1p-frac, delta 0.01"}
VARIANTS = {"k": "rendered at {}x", "e": "{} pre-training epochs"}


def label(row: str) -> str:
    """'rcdb@k4@e48' -> 'RCDB, rendered at 4x, 48 pre-training epochs' (effect.sh's row variants)."""
    family, *variants = row.split("@")
    parts = [LABELS.get(family, family)]
    for v in variants:
        if v == "lines":
            parts.append("lines capped to the size")
        elif v[:1] in VARIANTS and v[1:].isdigit():
            parts.append(VARIANTS[v[:1]].format(v[1:]))
        else:
            parts.append(v)
    return ", ".join(parts)


def final_top1(run_dir: str) -> float | None:
    """Top-1 after the last epoch, or None while the run is unfinished (its last row was not tested)."""
    with open(os.path.join(run_dir, "summary.csv")) as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["eval_top1"]) if rows and rows[-1].get("eval_top1") else None


def collect(runs: str) -> dict[str, dict[int, float]]:
    """{row: {seed: final top-1}} of the finished fine-tuning runs."""
    out: dict[str, dict[int, float]] = {}
    for name in sorted(os.listdir(runs)):
        match = re.fullmatch(r"ft_(.+)_s(\d+)", name)
        if match and os.path.isfile(os.path.join(runs, name, "summary.csv")):
            top1 = final_top1(os.path.join(runs, name))
            if top1 is not None:
                out.setdefault(match[1], {})[int(match[2])] = top1
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def gain_text(diffs: list[float]) -> str:
    """'+7.3 ± 4.6 (+10.0 / +2.0 / +10.0)': paired gains, mean +- sample std, then each seed's."""
    m, s = mean_std(diffs)
    return f"{m:+.1f} ± {s:.1f} ({' / '.join(f'{d:+.1f}' for d in diffs)})"


def table(results: dict[str, dict[int, float]]) -> list[dict]:
    scratch = results.get("scratch", {})
    longer = results.get("scratch2x", {})
    families = list(LABELS)
    order = sorted(results, key=lambda r: (families.index(r.split("@")[0]) if r.split("@")[0] in LABELS
                                           else len(families), r))
    rows = []
    for row in order:
        seeds = sorted(results[row])
        acc = [results[row][s] for s in seeds]
        paired = [results[row][s] - scratch[s] for s in seeds if s in scratch]
        entry = {"row": row, "label": label(row), "seeds": seeds, "top1": acc, "mean_std": mean_std(acc)}
        if row != "scratch" and paired:
            entry["gain"] = mean_std(paired)
            entry["gains"] = paired
        paired_2x = [results[row][s] - longer[s] for s in seeds if s in longer]
        if longer and not row.startswith("scratch") and paired_2x:
            entry["gain_2x"] = mean_std(paired_2x)
            entry["gains_2x"] = paired_2x
        rows.append(entry)
    return rows


def markdown(rows: list[dict]) -> str:
    longer = any("gain_2x" in r for r in rows)
    head = "| pre-training | seeds | top-1 per seed | top-1 mean ± std | gain over scratch (paired; per seed) |"
    head += " gain over scratch at 2x epochs |" if longer else ""
    lines = [head, "| --- " * (6 if longer else 5) + "|"]
    for r in rows:
        m, s = r["mean_std"]
        gains = [gain_text(r[k]) if k in r else "" for k in ("gains", "gains_2x")[:1 + longer]]
        per_seed = " / ".join(f"{a:.1f}" for a in r["top1"])
        lines.append(f"| {r['label']} | {len(r['seeds'])} | {per_seed} | {m:.1f} ± {s:.1f} | " + " | ".join(gains) + " |")
    return "\n".join(lines)


def bar_chart(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    labels = [r["label"] for r in rows]
    means = [r["mean_std"][0] for r in rows]
    stds = [r["mean_std"][1] for r in rows]
    colours = ["#999999" if r["row"].startswith("scratch") else "#3b75af" for r in rows]
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=colours)
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r["top1"]), r["top1"], color="black", s=8, zorder=3)
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right")
    low = min(min(r["top1"]) for r in rows)
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_ylabel("digits top-1 (%)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", help="folder of ft_<row>_s<seed> fine-tuning runs")
    parser.add_argument("--out", default=None, help="write PREFIX.md, PREFIX.csv and PREFIX.png")
    parser.add_argument("--title", default="fine-tuned on scikit-learn digits; bars: mean ± std, dots: seeds")
    args = parser.parse_args()
    rows = table(collect(args.runs))
    if not rows:
        raise SystemExit(f"effect_report.py: no finished ft_<row>_s<seed> runs in {args.runs}")
    text = markdown(rows)
    print(text)
    if args.out:
        with open(args.out + ".md", "w") as f:
            f.write(text + "\n")
        with open(args.out + ".csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "seed", "top1"])
            for r in rows:
                writer.writerows([r["row"], s, a] for s, a in zip(r["seeds"], r["top1"]))
        bar_chart(rows, args.out + ".png", args.title)
        print(f"wrote {args.out}.md, {args.out}.csv, {args.out}.png")


if __name__ == "__main__":
    main()
