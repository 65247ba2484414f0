"""The arithmetic of a study's tables: mean and sample standard deviation over seeds, and the gain of a row over a
baseline row paired by seed (the same seed's fine-tune from scratch, say), which removes the part of the
seed-to-seed spread that both rows share."""
from __future__ import annotations

import statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the std of one value is 0."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_gains(row: dict[int, float], baseline: dict[int, float]) -> list[float]:
    """ROW minus BASELINE for each seed that both have, in seed order."""
    return [row[s] - baseline[s] for s in sorted(row) if s in baseline]


def spread(values: list[float], fmt: str = ".1f") -> str:
    m, s = mean_std(values)
    return f"{m:{fmt}} ± {s:{fmt}}"


def gain_text(diffs: list[float]) -> str:
    """'+7.3 ± 4.6 (+10.0 / +2.0 / +10.0)': paired gains, mean +- sample std, then each seed's."""
    m, s = mean_std(diffs)
    return f"{m:+.1f} ± {s:.1f} ({' / '.join(f'{d:+.1f}' for d in diffs)})"


def table(results: dict[str, dict[int, float]], baselines: list[str]) -> list[dict]:
    """One entry per row with results (in the order of RESULTS): its seeds, values, (mean, std), and for each
    baseline with results (but not for the baselines themselves) the paired gains {seed: gain}."""
    rows = []
    for row, got in results.items():
        if not got:
            continue
        seeds = sorted(got)
        entry = {"row": row, "seeds": seeds, "top1": [got[s] for s in seeds],
                 "mean_std": mean_std([got[s] for s in seeds]), "gains": {}}
        for base in baselines:
            other = results.get(base, {})
            if row not in baselines and any(s in other for s in seeds):
                entry["gains"][base] = {s: got[s] - other[s] for s in seeds if s in other}
        rows.append(entry)
    return rows


def seeds_table(results: dict[str, dict[int, float]], labels: dict[str, str], paired: dict[str, str],
                what: str = "probe top-1") -> list[str]:
    """Markdown lines: per row (in the order of `labels`) the value per seed, mean +- sample std, and for rows in
    `paired` the gain over their counterpart paired by seed (mean +- std, then each seed's). The self-supervised
    checks' table (exe_scripts/hpt_effect.py, ssl_effect.py), where each row has its own counterpart."""
    lines = [f"| backbone | seeds | {what} per seed | mean ± std | gain over its random-init counterpart (paired) |",
             "| --- | --- | --- | --- | --- |"]
    for row, label in labels.items():
        got = results.get(row)
        if not got:
            continue
        seeds = sorted(got)
        diffs = paired_gains(got, results.get(paired.get(row, ""), {}))
        gain = gain_text(diffs) if diffs else ""
        lines.append(f"| {label} | {len(seeds)} | {' / '.join(f'{got[s]:.1f}' for s in seeds)} | "
                     f"{spread([got[s] for s in seeds])} | {gain} |")
    return lines
