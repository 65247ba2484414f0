"""Print the fine-tuning accuracies of the demo's runs side by side, from their summary.csv files."""
from __future__ import annotations

import csv
import os
import sys


def accuracies(run_dir: str) -> tuple[float, float]:
    with open(os.path.join(run_dir, "summary.csv")) as f:
        top1 = [float(row["eval_top1"]) for row in csv.DictReader(f)]
    return top1[-1], max(top1)


def main(pairs: list[str]) -> None:
    print(f"{'fine-tuned on digits':<28} {'final top-1':>12} {'best top-1':>11}")
    for pair in pairs:
        label, run_dir = pair.split("=", 1)
        final, best = accuracies(run_dir)
        print(f"{label:<28} {final:>11.1f}% {best:>10.1f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
