"""Print the fine-tuning accuracies of the demo's runs side by side, from their summary.csv files: the top-1 after
the last epoch (epochs that were not tested have no eval_top1), and each run's gain over the last one given.

    python exe_scripts/demo_report.py "LABEL=RUN_DIR" ... "from scratch=RUN_DIR"
"""
from __future__ import annotations

import csv
import os
import sys


def final_top1(run_dir: str) -> float:
    with open(os.path.join(run_dir, "summary.csv")) as f:
        tested = [float(row["eval_top1"]) for row in csv.DictReader(f) if row.get("eval_top1")]
    if not tested:
        raise SystemExit(f"demo_report.py: {run_dir}/summary.csv has no tested epoch")
    return tested[-1]


def main(pairs: list[str]) -> None:
    runs = [(label, final_top1(run_dir)) for label, run_dir in (pair.split("=", 1) for pair in pairs)]
    reference_label, reference = runs[-1]
    print(f"{'fine-tuned on digits':<28} {'top-1':>7}")
    for label, top1 in runs:
        gain = f"   {top1 - reference:+.1f} points over {reference_label}" if label != reference_label else ""
        print(f"{label:<28} {top1:>6.1f}%{gain}")


if __name__ == "__main__":
    main(sys.argv[1:])
