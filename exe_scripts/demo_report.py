"""Print the fine-tuning accuracies of the demo's runs side by side, from their summary.csv files: the top-1 after
the last epoch, and each run's gain over the last one given.

    python exe_scripts/demo_report.py "LABEL=RUN_DIR" ... "from scratch=RUN_DIR"
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the fdsl of this checkout
from fdsl.study.local import final_metric


def final_top1(run_dir: str) -> float | None:
    return final_metric(run_dir, "eval_top1")


def main(pairs: list[str]) -> None:
    runs = []
    for label, run_dir in (pair.split("=", 1) for pair in pairs):
        top1 = final_top1(run_dir)
        if top1 is None:
            raise SystemExit(f"demo_report.py: {run_dir} is unfinished (its last epoch has no test result)")
        runs.append((label, top1))
    reference_label, reference = runs[-1]
    print(f"{'fine-tuned on digits':<28} {'top-1':>7}")
    for label, top1 in runs:
        gain = f"   {top1 - reference:+.1f} points over {reference_label}" if label != reference_label else ""
        print(f"{label:<28} {top1:>6.1f}%{gain}")


if __name__ == "__main__":
    main(sys.argv[1:])
