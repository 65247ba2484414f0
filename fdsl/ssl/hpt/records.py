"""What the HPT stages write and how they name their bases, shared by the stages (fdsl.ssl.hpt) and the study
tools that read them (fdsl.study.hpt): the metrics.jsonl logs (one JSON row per evaluation, keyed by `step`),
the published choice of the test value at the best late validation value, and the <base> name of a base
checkpoint (its <base>_basetrain folder)."""
from __future__ import annotations

import json
import os
import re


def read_jsonl(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a killed run: keep what came before
    return rows


def append_jsonl(path: str, row: dict) -> None:
    """Add a row keyed by `step`, dropping rows at or after it (left by a run that was resumed from earlier)."""
    rows = []
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if os.path.isfile(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if r.get("step", -1) < row["step"]] + [row]
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)


def series(rows: list[dict], split: str, selection: str = "published") -> list[float | None]:
    """The headline value of each evaluation of `split` (val/test): top1, else the mean AUROC over classes.
    published (agg-results.sh averaged every <split>-auroc_<c>): a class with one label value in the split,
    which has no AUROC, counts as 0; fixed: it is left out of the mean (the `<split>_auroc` of the row)."""
    if any(f"{split}_top1" in r for r in rows):
        return [r.get(f"{split}_top1") for r in rows]
    if selection == "fixed":
        return [r.get(f"{split}_auroc") for r in rows]
    out = []
    for r in rows:
        per_class = [v for k, v in r.items() if re.fullmatch(rf"{split}_auroc_\d+", k)]
        out.append(sum(v or 0.0 for v in per_class) / len(per_class) if per_class else None)
    return out


SELECTIONS = ("published", "fixed")


def late_evaluations(n: int, selection: str = "published") -> list[int]:
    """The evaluations the best val is chosen among. published (agg-results.sh): index ct counts when
    `[[ $ct > $afterlen ]]` with afterlen = n * 0.5 rounded half to even, a bash STRING comparison: with 50
    evaluations 3..9 count besides 26..49, with 400 also 21..99. fixed: n//2 .. n-1, compared as numbers."""
    if selection == "fixed":
        return list(range(n // 2, n))
    after = str(round(n * 0.5))
    return [i for i in range(n) if str(i) > after]


def best_val_test(val: list, test: list, selection: str = "published") -> tuple[int, float, float] | None:
    """(index, val, test) at the best val among the late evaluations (the first one on ties; published:
    only a val above 0 counts, as its loop starts from max_val=0)."""
    candidates = [i for i in late_evaluations(len(val), selection) if val[i] is not None and test[i] is not None]
    if selection == "published":
        candidates = [i for i in candidates if val[i] > 0]
    if not candidates:
        return None
    best = max(candidates, key=lambda i: (val[i], -i))
    return best, val[best], test[best]


def is_random(weight) -> bool:
    return weight is None or str(weight).strip().lower() in ("", "none", "random", "no")


def base_name(weight) -> str:
    """The <base> of <base>_basetrain for a base checkpoint path."""
    if is_random(weight):
        return "no"
    from fdsl.ssl.backbone import sidecar

    meta_path = sidecar(weight)
    if os.path.basename(weight).startswith("final_backbone") and os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        return f"{meta['basetrain']}-{meta['dataset']}_{meta['iters']}it"
    stem = os.path.basename(weight)
    for suffix in (".tar", ".pth", ".pt", ".pkl"):
        stem = stem.removesuffix(suffix)
    return stem.replace("-", "_")
