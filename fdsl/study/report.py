"""A study's report: STUDY_OUT/report.md (the transfer table: rows down the side, downstream sets across the
top; then per set every seed and the paired gains over each baseline row; then the study as it ran and the
git commit), report.csv (one line per fine-tune) and report.png (a bar chart per set)."""
from __future__ import annotations

import csv
import io
import os
import subprocess

import yaml

from fdsl.study.aggregate import gain_text, mean_std, table
from fdsl.study.graph import Plan, row_label
from fdsl.study.local import read_result, write_atomic
from fdsl.study.timing import cost, cost_line


def collect(study: dict, plan: Plan) -> dict[str, dict[str, dict[int, float]]]:
    """{set: {row: {seed: final top-1}}} of the finished fine-tunes, rows in the plan's order."""
    out: dict[str, dict[str, dict[int, float]]] = {s: {} for s in study["downstream"]}
    for run in plan.cells:
        result = read_result(study["out"], run)
        row = out[run.meta["set"]].setdefault(run.meta["row"], {})
        if result:
            row[run.meta["seed"]] = result["top1"]
    return {s: {r: v for r, v in rows.items() if v} for s, rows in out.items()}


def git_commit() -> str:
    """The commit of the checkout fdsl runs from ('abc123 + uncommitted changes'), or 'unknown'."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    def git(*args):
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=False, timeout=30)

    head = git("rev-parse", "--short=12", "HEAD")
    if head.returncode:
        return "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + (" + uncommitted changes" if dirty else "")


def set_table(study: dict, rows: list[dict]) -> list[str]:
    """Markdown lines of one set: per row the seeds, each seed's top-1, mean +- std, gain over each baseline."""
    bases = [b for b in study["baselines"] if any(b in r["gains"] for r in rows)]
    head = "| pre-training | seeds | top-1 per seed | top-1 mean ± std |"
    head += "".join(f" gain over {row_label(study, b)} (paired; per seed) |" for b in bases)
    lines = [head, "| --- " * (4 + len(bases)) + "|"]
    for r in rows:
        gains = [gain_text(list(r["gains"][b].values())) if b in r["gains"] else "" for b in bases]
        m, s = r["mean_std"]
        cells = [row_label(study, r["row"]), str(len(r["seeds"])), " / ".join(f"{a:.1f}" for a in r["top1"]),
                 f"{m:.1f} ± {s:.1f}", *gains]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def transfer_table(study: dict, tables: dict[str, list[dict]]) -> list[str]:
    """Rows down the side, sets across the top, top-1 mean +- std (seeds) in the cells."""
    sets = list(tables)
    order = list(dict.fromkeys(r["row"] for s in sets for r in tables[s]))
    lines = ["| pre-training | " + " | ".join(str(study["downstream"][s]["label"]) for s in sets) + " |",
             "| --- " * (1 + len(sets)) + "|"]
    for row in order:
        cells = []
        for s in sets:
            r = next((r for r in tables[s] if r["row"] == row), None)
            cells.append(f"{r['mean_std'][0]:.1f} ± {r['mean_std'][1]:.1f} ({len(r['seeds'])})" if r else "")
        lines.append(f"| {row_label(study, row)} | " + " | ".join(cells) + " |")
    return lines


def markdown(study: dict, tables: dict[str, list[dict]], command: str, spent: dict | None = None) -> str:
    lines = [f"# Study {study['name']}", "",
             f"Final {study['metric']} of each fine-tune: mean ± sample std (seeds) per row and downstream set.", ""]
    lines += transfer_table(study, tables)
    for s, rows in tables.items():
        if rows:
            lines += ["", f"## {study['downstream'][s]['label']}", ""] + set_table(study, rows)
    lines += ["", *([cost_line(spent), ""] if spent else []),
              f"Ran from commit {git_commit()} with `{command}`. The study as it ran:", "", "```yaml",
              yaml.safe_dump(study, sort_keys=False, allow_unicode=True).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def csv_text(study: dict, tables: dict[str, list[dict]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["set", "row", "label", "seed", "top1", *(f"gain_over_{b}" for b in study["baselines"])])
    for s, rows in tables.items():
        for r in rows:
            for seed, top1 in zip(r["seeds"], r["top1"]):
                gains = [r["gains"].get(b, {}).get(seed) for b in study["baselines"]]
                writer.writerow([s, r["row"], row_label(study, r["row"]), seed, top1,
                                 *("" if g is None else f"{g:.2f}" for g in gains)])
    return buf.getvalue()


def bar_chart(panels: list[tuple[str, str, list[tuple[str, list[float], bool]]]], path: str) -> None:
    """Bar charts side by side, one per panel (title, y label, bars); a bar is (label, values per seed, grey?):
    its height the mean, its error bar the std, a dot per seed; grey for a baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 3.6), dpi=110, squeeze=False)
    for ax, (title, ylabel, bars) in zip(axes[0], panels):
        stats = [mean_std(values) for _, values, _ in bars]
        ax.bar(range(len(bars)), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4,
               color=["#999999" if grey else "#3b75af" for *_, grey in bars])
        for i, (_, values, _) in enumerate(bars):
            ax.scatter([i] * len(values), values, color="black", s=8, zorder=3)
        ax.set_xticks(range(len(bars)), [label for label, *_ in bars], rotation=20, ha="right")
        ax.set_ylim(max(0, min(min(values) for _, values, _ in bars) - 10), 100)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def panels(study: dict, tables: dict[str, list[dict]]) -> list:
    return [(f"fine-tuned on {study['downstream'][s]['label']}; bars: mean ± std, dots: seeds",
             f"{study['downstream'][s]['label']} top-1 (%)",
             [(row_label(study, r["row"]), r["top1"], r["row"] in study["baselines"]) for r in rows])
            for s, rows in tables.items() if rows]


def write(study: dict, plan: Plan, command: str, jobs: int = 1) -> str | None:
    """Write report.md, .csv and .png under STUDY_OUT; returns the per-set tables' Markdown and the compute line
    (on JOBS jobs), or None when no fine-tune has finished."""
    tables = {s: table(results, study["baselines"]) for s, results in collect(study, plan).items()}
    if not any(tables.values()):
        return None
    root = study["out"]
    results = {r.name: res for r in plan.order() if (res := read_result(root, r))}
    spent = cost(plan, results, jobs)
    write_atomic(os.path.join(root, "report.md"), markdown(study, tables, command, spent))
    write_atomic(os.path.join(root, "report.csv"), csv_text(study, tables))
    bar_chart(panels(study, tables), os.path.join(root, "report.png"))
    return "\n\n".join(["\n".join(set_table(study, rows)) for rows in tables.values() if rows] + [cost_line(spent)])
