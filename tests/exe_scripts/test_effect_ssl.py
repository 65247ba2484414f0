"""The self-supervised rows of the effect check: exe_scripts/hpt_effect.py (MoCo v2 / BYOL from random init and a
FractalDB base, k-NN steps saved) and exe_scripts/ssl_effect.py (DeepCluster, RotNet, DeeperCluster), each at a
smoke size end to end (about 30-45 s each on one core), and the arithmetic of their tables."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

EXE = os.path.join(REPO, "exe_scripts")
sys.path.insert(0, EXE)

import hpt_effect

from fdsl.study.aggregate import seeds_table


def test_steps_to_reach_interpolates_between_logged_points():
    curve = [(0, 60.0), (10, 70.0), (20, 90.0), (30, 85.0)]
    assert hpt_effect.steps_to_reach(curve, 80.0) == pytest.approx(15.0)  # halfway from 70 (step 10) to 90 (20)
    assert hpt_effect.steps_to_reach(curve, 70.0) == 10.0  # reached exactly at a logged point
    assert hpt_effect.steps_to_reach(curve, 55.0) == 0.0  # the base itself is already there
    assert hpt_effect.steps_to_reach(curve, 90.0) == 20.0  # the first time, though it falls back later
    assert hpt_effect.steps_to_reach(curve, 95.0) is None
    assert hpt_effect.steps_to_reach(list(reversed(curve)), 80.0) == pytest.approx(15.0)  # order of the log
    assert hpt_effect.steps_to_reach([], 50.0) is None


def test_steps_saved_is_the_final_step_minus_the_step_the_base_reaches_randoms_final_value():
    random_init = [(0, 50.0), (10, 70.0), (20, 75.0), (30, 80.0)]  # ends at 80 after 30 steps
    base = [(0, 65.0), (10, 78.0), (20, 82.0), (30, 88.0)]  # reaches 80 at step 15
    assert hpt_effect.steps_saved(base, random_init) == pytest.approx(15.0)
    assert hpt_effect.steps_saved([(0, 81.0), (30, 84.0)], random_init) == 30.0  # the base starts above it
    assert hpt_effect.steps_saved([(0, 40.0), (10, 79.0), (30, 79.9)], random_init) is None  # never reached
    # the target is the value at the LAST step, not the best one on the way
    assert hpt_effect.steps_saved([(0, 70.0), (30, 90.0)], [(0, 50.0), (10, 95.0), (30, 80.0)]) == pytest.approx(15.0)


def test_seeds_table_pairs_gains_by_seed_and_skips_missing_rows():
    results = {"random": {0: 60.0, 1: 70.0, 2: 65.0}, "fractaldb": {0: 70.0, 1: 72.0, 2: 75.0},
               "solo": {1: 50.0}}
    lines = seeds_table(results, {"random": "random init", "fractaldb": "FractalDB", "solo": "one seed",
                                  "absent": "not run"}, {"fractaldb": "random", "solo": "random"})
    assert lines[2] == "| random init | 3 | 60.0 / 70.0 / 65.0 | 65.0 ± 5.0 |  |"
    assert lines[3] == "| FractalDB | 3 | 70.0 / 72.0 / 75.0 | 72.3 ± 2.5 | +7.3 ± 4.6 (+10.0 / +2.0 / +10.0) |"
    assert lines[4] == "| one seed | 1 | 50.0 | 50.0 ± 0.0 | -20.0 ± 0.0 (-20.0) |"  # paired with seed 1 only
    assert len(lines) == 5  # "absent" has no results: no row


def fake_hpt_seed(work, seed: int, probe: dict, knn: dict) -> None:
    """The files `fdsl hpt run` leaves for one seed: a linear probe per backbone (2 evaluations; the second
    counts) and a k-NN log per SSL run."""
    root = work / f"s{seed}" / "hpt"
    root.mkdir(parents=True)
    (root / "project.yaml").write_text("shortname: digits\n")
    for (base, tag), top1 in probe.items():
        run = root / "work" / "linear-eval" / f"{base}_basetrain" / f"{tag}-linear-eval-lr-s{seed}"
        run.mkdir(parents=True)
        rows = [{"step": 5, "val_top1": 10.0, "test_top1": 11.0}, {"step": 10, "val_top1": 50.0, "test_top1": top1}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run / "run.json").write_text(json.dumps({"expected_evals": 2}))
    for (base, tag), curve in knn.items():
        run = root / "work" / "pretrain" / f"{base}_basetrain" / tag
        run.mkdir(parents=True)
        (run / "knn.jsonl").write_text("".join(json.dumps({"step": s, "knn_top1": a}) + "\n" for s, a in curve))


def test_hpt_report_reads_the_runs_of_each_seed(tmp_path):
    probe = {("no", "0-iters"): 20.0, ("fractaldb", "0-iters"): 30.0, ("no", "30-iters"): 60.0,
             ("fractaldb", "30-iters"): 65.0, ("no", "30byol-iters"): 62.0, ("fractaldb", "30byol-iters"): 61.0}
    random_moco = [(0, 85.0), (10, 82.0), (20, 81.0), (30, 80.0)]
    fake_hpt_seed(tmp_path, 0, probe, {("no", "30-iters"): random_moco,
                                       ("fractaldb", "30-iters"): [(0, 60.0), (10, 70.0), (20, 90.0), (30, 88.0)],
                                       ("no", "30byol-iters"): [(0, 85.0), (30, 86.0)],
                                       ("fractaldb", "30byol-iters"): [(0, 90.0), (30, 91.0)]})
    fake_hpt_seed(tmp_path, 1, {k: v + 2.0 for k, v in probe.items()},
                  {("no", "30-iters"): random_moco, ("fractaldb", "30-iters"): [(0, 60.0), (30, 79.0)],
                   ("no", "30byol-iters"): [(0, 85.0), (30, 86.0)],
                   ("fractaldb", "30byol-iters"): [(0, 70.0), (10, 80.0), (20, 86.0), (30, 87.0)],
                   ("fractaldb", "30bn-iters"): [(0, 1.0), (30, 2.0)]})  # not a row of the table
    args = hpt_effect.options([str(tmp_path), "--seeds", "0", "1", "--steps", "30", "--knn-every", "10"])
    text = hpt_effect.report(str(tmp_path), [0, 1], args)
    assert "| random init, no SSL | 2 | 20.0 / 22.0 | 21.0 ± 1.4 |  |" in text
    assert "| FractalDB + MoCo v2 | 2 | 65.0 / 67.0 | 66.0 ± 1.4 | +5.0 ± 0.0 (+5.0 / +5.0) |" in text
    assert "| FractalDB + BYOL | 2 | 61.0 / 63.0 | 62.0 ± 1.4 | -1.0 ± 0.0 (-1.0 / -1.0) |" in text
    # MoCo: seed 0 reaches 80 halfway from step 10 (70) to 20 (90), seed 1 never; BYOL: 0 and 20 -> 30 and 10 saved
    assert "| MoCo v2 | 2 | 80.0 / 80.0 | 15 / never | 15 ± 0 (seeds 1: never) |" in text
    assert "| BYOL | 2 | 86.0 / 86.0 | 0 / 20 | 20 ± 14 |" in text
    assert (tmp_path / "hpt_effect.md").read_text() == text + "\n"
    rows = read_csv(tmp_path / "hpt_effect.csv")
    assert {(r["row"], r["seed"]): r["steps_saved"] for r in rows if r["steps_saved"]} == {
        ("fractaldb+moco", "0"): "15.0", ("fractaldb+moco", "1"): "never", ("fractaldb+byol", "0"): "30.0",
        ("fractaldb+byol", "1"): "10.0"}
    assert (tmp_path / "hpt_effect.png").stat().st_size > 5000


def run_script(name: str, *argv, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the scripts find fdsl in their own checkout
    return subprocess.run([sys.executable, os.path.join(EXE, name), *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_hpt_effect_smoke_writes_the_table_chart_and_resumes(tmp_path):
    work = tmp_path / "hpt"
    proc = run_script("hpt_effect.py", work, "--quick", "--seeds", 0, "--methods", "moco", "--jobs", 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (work / "hpt_effect.md").read_text()
    for label in ("random init, no SSL", "FractalDB base, no SSL", "random init + MoCo v2", "FractalDB + MoCo v2"):
        assert f"| {label} | 1 |" in table
    assert "BYOL" not in table  # not asked for
    assert "| MoCo v2 | 1 |" in table  # the steps-saved line
    rows = {r["row"]: r for r in read_csv(work / "hpt_effect.csv")}
    assert set(rows) == {"random", "fractaldb", "random+moco", "fractaldb+moco"}
    assert all(0.0 <= float(r["probe_top1"]) <= 100.0 for r in rows.values())
    assert rows["random+moco"]["knn_final_top1"] and rows["fractaldb+moco"]["steps_saved"]
    assert (work / "hpt_effect.png").stat().st_size > 5000
    # each seed's project probes with its own seed, and the base was trained with it
    assert (work / "s0" / "hpt" / "configs" / "linear-eval" / "linear-eval-lr-s0.yaml").is_file()
    assert "\nseed: 0\n" in (work / "s0" / "runs" / "fractaldb" / "args.yaml").read_text()
    again = run_script("hpt_effect.py", work, "--quick", "--seeds", 0, "--methods", "moco", "--jobs", 1)
    assert again.returncode == 0 and "==" not in again.stdout, again.stdout  # nothing left to run
    assert table in again.stdout
    other = run_script("hpt_effect.py", work, "--quick", "--seeds", 0, "--methods", "moco", "--steps", 8)
    assert other.returncode != 0 and "steps 12 -> 8" in other.stderr  # runs of another size are not mixed in


@pytest.mark.slow
def test_ssl_effect_smoke_writes_every_row_and_its_gain(tmp_path):
    work = tmp_path / "ssl"
    proc = run_script("ssl_effect.py", work, "--quick", "--seeds", 0, "--jobs", 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (work / "ssl_effect.md").read_text()
    for label in ("random-init trunk", "DeepCluster on digits", "RotNet on digits", "DeeperCluster on digits",
                  "DeeperCluster on FractalDB"):
        assert f"| {label} | 1 |" in table
    rows = {r["row"]: r for r in read_csv(work / "ssl_effect.csv")}
    assert set(rows) == {"random", "deepcluster", "rotnet", "deepercluster", "deepercluster_fractaldb"}
    for row in ("deepcluster", "rotnet", "deepercluster", "deepercluster_fractaldb"):
        assert float(rows[row]["gain_over_random"]) == pytest.approx(
            float(rows[row]["probe_top1"]) - float(rows["random"]["probe_top1"]), abs=0.02)
    assert (work / "ssl_effect.png").stat().st_size > 5000
    # what each row trained: the published flags of the three methods, on the data named
    args = {row: (work / "runs" / f"{row}_s0" / "args.yaml").read_text() for row in rows if row != "random"}
    assert "super_classes: 1\n" in args["deepcluster"] and "rotnet: false\n" in args["deepcluster"]
    assert "super_classes: 4\n" in args["rotnet"] and "\nk: 1\n" in args["rotnet"]
    assert "super_classes: 8\n" in args["deepercluster"] and "rotnet: true\n" in args["deepercluster"]
    assert f"data_path: {work / 'fractaldb'}\n" in args["deepercluster_fractaldb"]
    assert f"data_path: {work / 'digits' / 'train'}\n" in args["deepercluster"]


def test_effect_sh_hands_the_ssl_rows_to_their_scripts(tmp_path):
    """ROWS of SSL rows only: effect.sh runs no supervised row and calls each script with SEEDS and its extra
    flags (PYTHON is a stub that prints its arguments); SPLIT=select refuses them before any work."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "called: $*"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PYTHON": str(stub), "SEEDS": "0 1", "ROWS": "hpt deepercluster", "HPT_ARGS": "--quick",
           "SSL_ARGS": "--epochs 2 --rows rotnet", "JOBS": "2"}
    proc = subprocess.run(["bash", os.path.join(EXE, "effect.sh"), str(tmp_path / "fx")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    calls = [line.removeprefix("called: ") for line in proc.stdout.splitlines() if line.startswith("called: ")]
    assert calls == [f"{EXE}/hpt_effect.py {tmp_path}/fx/hpt --seeds 0 1 --jobs 2 --quick",
                     f"{EXE}/ssl_effect.py {tmp_path}/fx/ssl --seeds 0 1 --jobs 2 --epochs 2 --rows rotnet"]
    # beside a supervised row, each SSL row is one chain on one thread, its output in WORK/<row>.log, and the
    # supervised rows go to `fdsl study` with the knobs as --set and the other JOBS
    mixed = subprocess.run(["bash", os.path.join(EXE, "effect.sh"), str(tmp_path / "fm")],
                           env={**env, "ROWS": "fractaldb hpt", "SCRATCH": "0", "FT_EPOCHS": "3"}, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60, check=False)
    assert mixed.returncode == 0, mixed.stderr
    assert f"== hpt (log: {tmp_path}/fm/hpt.log)" in mixed.stdout
    assert (tmp_path / "fm" / "hpt.log").read_text() == f"called: {EXE}/hpt_effect.py {tmp_path}/fm/hpt --seeds 0 1 --jobs 1 --quick\n"
    assert (f"called: -m fdsl study {REPO}/studies/digits_effect.yaml --set out={tmp_path}/fm --set seeds=0 1 "
            "--set rows=fractaldb --set vars.split=test --set pretrain_per_seed=false --set vars.ft_epochs=3 "
            "--jobs 1\n") in mixed.stdout
    assert f"hpt: no table ({tmp_path}/fm/hpt/hpt_effect.md)" in mixed.stdout
    refused = subprocess.run(["bash", os.path.join(EXE, "effect.sh"), str(tmp_path / "fy")],
                             env={**env, "SPLIT": "select", "ROWS": "fractaldb hpt"}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "self-supervised rows (hpt)" in refused.stderr and not refused.stdout
    assert not (tmp_path / "fy").exists()
