"""`fdsl plot RUN_DIR [RUN_DIR ...] [-o curves.png]`: loss and accuracy curves from summary.csv to a PNG."""
from __future__ import annotations

import csv
import os
import sys

from fdsl.cli.common import Parser
from fdsl.errors import UserError


def read(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "summary.csv")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist; pass a run directory (<output>/<experiment>)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"{path} has no epochs yet")
    return rows


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows that have `key` (finetune --eval-interval leaves untested epochs blank)."""
    kept = [r for r in rows if r.get(key)]
    return [int(r["epoch"]) for r in kept], [float(r[key]) for r in kept]


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="fdsl plot", description=__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--out", default=None, help="PNG path (default: <first run>/curves.png)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {os.path.basename(os.path.normpath(r)): read(r) for r in args.runs}
    has_acc = any(series(rows, "eval_top1")[0] for rows in runs.values())
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4), squeeze=False)
    loss_ax = axes[0][0]
    for name, rows in runs.items():
        for key, style in (("train_loss", "-"), ("eval_loss", "--")):
            epochs, values = series(rows, key)
            if epochs:
                loss_ax.plot(epochs, values, style + ("o" if key == "eval_loss" else ""), label=f"{name} {key}")
        for key, style in (("eval_top1", "-o"), ("eval_top5", ":o")):
            epochs, values = series(rows, key)
            if has_acc and epochs:
                axes[0][1].plot(epochs, values, style, label=f"{name} {key}")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend(fontsize=7)
    if has_acc:
        axes[0][1].set(xlabel="epoch", ylabel="accuracy (%)", title="validation accuracy")
        axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    out = args.out or os.path.join(args.runs[0], "curves.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")
    return 0
