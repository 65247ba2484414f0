"""`fdsl hpt aggregate ROOT`: one record per evaluation run, written to ROOT/results/<dataset>_results.json.

For each run (ROOT/work/linear-eval/... and ROOT/work/finetune/..., each with the metrics.jsonl its probe
wrote): take the best validation value among the late evaluations and report the test value at that same
evaluation. `published` (default): "late" as agg-results.sh computed it, comparing indices as strings, which
lets some early evaluations in (late_evaluations); `fixed`: the second half, compared as numbers.
The value is top-1, or the mean per-class AUROC of multi-label lists. A run with fewer evaluations than its
schedule promised (run.json) is flagged incomplete on stderr and in its record.

Record fields (those of the published agg-results-to-final-json, with its values: basetrain "no" for random
init, pretrain_data the data set itself unless the base is a chain; plus steps/method/bn_only parsed out of
the names):
dataset, result_type, subset, basetrain, pretrain_data, pretrain_iters, steps, method, bn_only, sample,
variant, date, result, val, evals, complete, file. The JSON is keyed by the run's path and merged into an
existing file, so re-aggregating updates records in place.
"""
from __future__ import annotations

import json
import os
import re
import sys

from fdsl.errors import UserError
from fdsl.ssl.hpt.records import best_val_test, read_jsonl, series


def split_basetrain(name: str, dataset: str) -> tuple[str, str]:
    """(basetrain, pretrain_data) of a <base>_basetrain folder, as the published agg-results-to-final-json:
    `no_basetrain` -> ("no", dataset); a chain `a-b-src_50it_basetrain` -> ("a-b", "src_50it"), a level `no`
    read as "none" there (published: every substring "no" became "none", which mangles names such as
    "nocturne"; fdsl renames whole levels only)."""
    levels = name.removesuffix("_basetrain").split("-")
    if len(levels) == 1:
        return levels[0], dataset
    levels = ["none" if level == "no" else level for level in levels]
    return "-".join(levels[:-1]), levels[-1]


def parse_run_path(rel: str, dataset: str = "") -> dict:
    """linear-eval/<base>_basetrain/<N>-iters-linear-eval-lr-s0 or
    finetune/<n>-labels/<base>_basetrain/<N>-iters-2500-iter-0_01-lr-finetune -> record fields."""
    from fdsl.study.hpt.project import parse_tag

    parts = rel.replace(os.sep, "/").split("/")
    result_type = parts[0]
    subset = parts[1] if result_type == "finetune" else "all"
    base, source = split_basetrain(parts[-2], dataset)
    leaf = parts[-1]
    match = re.match(r"(\d+(?:bn)?(?:byol)?)-iters-(.*)$", leaf)
    if not match:
        raise ValueError(f"{rel}: run name does not start with <N>-iters-")
    token, rest = match.groups()
    steps, bn_only, method = parse_tag(f"{token}-iters")
    sample = re.search(r"-s(\d+)$", rest)
    return {"result_type": result_type, "subset": subset, "basetrain": base, "pretrain_data": source, "pretrain_iters": token, "steps": steps, "method": method,
            "bn_only": bn_only, "sample": int(sample.group(1)) if sample else 0,
            "variant": rest[: sample.start()] if sample else rest}


def collect(root: str, err=None, selection: str = "published") -> list[dict]:
    from fdsl.study.hpt.runner import load_root

    err = err or sys.stderr
    dataset = load_root(root)["shortname"]
    work = os.path.join(root, "work")
    records = []
    for folder in ("linear-eval", "finetune"):
        for dirpath, _, files in os.walk(os.path.join(work, folder)):
            if "metrics.jsonl" not in files:
                continue
            rel = os.path.relpath(dirpath, work)
            try:
                record = parse_run_path(rel, dataset)
            except ValueError as e:
                print(f"skipping {rel}: {e}", file=err)
                continue
            records.append(_record(dirpath, rel, dataset, record, err, selection))
    return records


def _record(dirpath: str, rel: str, dataset: str, record: dict, err, selection: str = "published") -> dict:
    rows = read_jsonl(os.path.join(dirpath, "metrics.jsonl"))
    meta_path = os.path.join(dirpath, "run.json")
    meta = _load_json(meta_path) if os.path.isfile(meta_path) else {}
    val, test = series(rows, "val", selection), series(rows, "test", selection)
    best = best_val_test(val, test, selection)
    expected = meta.get("expected_evals")
    complete = expected is not None and len(rows) >= expected
    if not complete:
        print(f"INCOMPLETE {rel}: {len(rows)} of {expected if expected is not None else '?'} evaluations", file=err)
    record.update({"dataset": dataset, "date": meta.get("started", ""), "evals": len(rows), "complete": complete,
                   "result": best[2] if best else None, "val": best[1] if best else None,
                   "best_step": rows[best[0]].get("step") if best else None, "file": rel})
    return record


def write(root: str, records: list[dict], out_dir: str | None = None) -> list[str]:
    """Merge the records into <out_dir>/<dataset>_results.json (keyed by run path); returns the files."""
    out_dir = out_dir or os.path.join(root, "results")
    os.makedirs(out_dir, exist_ok=True)
    by_dataset: dict[str, dict] = {}
    for r in records:
        by_dataset.setdefault(r["dataset"], {})[r["file"]] = r
    written = []
    for dataset, new in by_dataset.items():
        path = os.path.join(out_dir, f"{dataset}_results.json")
        merged = {}
        if os.path.isfile(path):
            try:
                merged = _load_json(path)
            except json.JSONDecodeError:
                raise UserError(f"{path} is not valid JSON; move it away and aggregate again") from None
        for key, value in new.items():
            merged[key] = {**merged.get(key, {}), **value}
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(merged, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        written.append(path)
    return written


def _load_json(path: str):
    with open(path) as f:
        return json.load(f)


def load_results(path: str) -> list[dict]:
    return list(_load_json(path).values())
