"""`fdsl study`: a toy study (scratch and a tiny FractalDB x one tiny set x 2 seeds, a one-layer ViT, one epoch)
end to end with kill -9 and resume; the keys (a changed recipe value is a new run); the report's arithmetic
against hand-computed numbers; the SLURM and mpirun lists; one-line errors for a bad study file."""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from fdsl.cli.main import main as fdsl_main
from fdsl.study import aggregate, spec, timing
from fdsl.study.graph import Plan, Run, layer
from fdsl.study.template import TemplateError, expand
from tests.helpers import REPO

TOY = """\
out: {out}
seeds: [0, 1]
rows: [scratch, fractaldb]
baselines: [scratch]
vars:
  epochs: 1
  model: --model deit_tiny_patch16_224 --model-kwargs patch_size=8 embed_dim=32 depth=1 num_heads=2 --img-size 16
  common: -b 4 -j 0 --device cpu --log-interval 100
recipe:
  pretrain: pretrain {{db}} {{model}} {{common}} --seed {{seed}} --epochs {{epochs}} --output {{runs}} --experiment {{name}}
  finetune: >-
    finetune {{data}} {{model}} {{common}} --seed {{seed}} --num-classes 3 --epochs {{epochs}} {{pretrained}}
    --output {{runs}} --experiment {{name}}
sources:
  scratch: {{label: from scratch, scratch: true}}
  fractaldb: {{database: fractaldb, render: --classes 2 --instances 4 --size 16 --iterations 500 --workers 1 --no-progress}}
downstream:
  tiny: {{folder: {data}}}
"""


@pytest.fixture()
def toy(tmp_path):
    """A 3-class 16 px train/val folder and the study file over it."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in range(3):
            os.makedirs(tmp_path / "ds" / split / str(c))
            for i in range(n):
                img = (rng.integers(0, 60, (16, 16)) + 60 * c).astype(np.uint8)
                Image.fromarray(img).save(tmp_path / "ds" / split / str(c) / f"{i}.png")
    path = tmp_path / "toy.yaml"
    path.write_text(TOY.format(out=tmp_path / "out", data=tmp_path / "ds"))
    return path


def fdsl_study(*argv, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "fdsl", "study", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=240, check=False, **kw)


def results(out) -> dict[str, float]:
    return {os.path.basename(p): os.path.getmtime(p) for p in glob.glob(str(out / "results" / "*.json"))}


@pytest.mark.slow
def test_toy_study_survives_kill_9_resumes_and_keys_the_recipe(toy):
    out = toy.parent / "out"
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "fdsl", "study", str(toy), "--jobs", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not results(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-way
    proc.wait()
    before = results(out)
    assert 1 <= len(before) < 6, before  # the database was built first (the longest chain), the rest not done
    assert "db_fractaldb" in " ".join(before)

    again = fdsl_study(toy, "--jobs", "1")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"{6 - len(before)} of 6 runs to do" in again.stdout
    assert "ETA" in again.stdout
    after = results(out)
    assert len(after) == 6 and all(after[name] == t for name, t in before.items())  # finished runs kept
    report = (out / "report.md").read_text()
    assert "| from scratch | 2 |" in report and "| fractaldb | 2 |" in report
    assert "gain over from scratch (paired; per seed)" in report and "Ran from commit" in report
    assert (out / "report.png").stat().st_size > 3000
    with open(glob.glob(str(out / "results" / "ft_fractaldb_tiny_s1-*.json"))[0]) as f:
        result = json.load(f)
    assert 0.0 <= result["top1"] <= 100.0 and "--pretrained-path" in result["argv"]

    third = fdsl_study(toy, "--jobs", "1")
    assert third.returncode == 0 and "nothing to run: all 6 runs are done" in third.stdout
    assert results(out) == after

    # a changed recipe value is a new run (the epochs: pre-training and fine-tunes), the database is not
    plan = fdsl_study(toy, "--dry-run", "--set", "vars.epochs=2")
    states = [line.split()[:2] for line in plan.stdout.splitlines() if line.startswith(("done", "to do"))]
    done = [s for s in states if s[0] == "done"]
    assert len(states) == 6 and len(done) == 1 and done[0][1].startswith("db_fractaldb-")

    # another study, its lines differing only in --log-interval and its fine-tune in epochs, reuses this one's
    # database and pre-training (`reuse:`) and fine-tunes from the linked pre-training
    other = ["--set", f"out={toy.parent / 'out2'}", "--set", f"reuse={out}", "--set", "seeds=0",
             "--set", "rows=fractaldb", "--set", "baselines=[]", "--set", "downstream.tiny.vars={epochs: 2}",
             "--set", "vars.common=-b 4 -j 0 --device cpu --log-interval 7"]
    plan = fdsl_study(toy, "--dry-run", *other)
    states = {line[5:].split()[0]: line[:5] for line in plan.stdout.splitlines()
              if line[:5] in ("done ", "to do", "reuse")}
    assert sorted(states.values()) == ["reuse", "reuse", "to do"], plan.stdout
    proc = fdsl_study(toy, *other, "--jobs", "1")
    assert proc.returncode == 0 and "2 runs reused from" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    (pre,) = (toy.parent / "out2" / "runs").glob("pre_fractaldb_s0-*")
    assert pre.is_symlink() and pre.resolve() == (out / "runs" / pre.name).resolve()
    assert "1 finished runs (2 more reused from another study)" in proc.stdout
    with pytest.raises(spec.UserError, match="is not a study's output folder"):
        toy_study(toy, f"reuse={toy.parent / 'nosuch'}")


@pytest.mark.slow
def test_a_prepare_spec_is_prepared_once_and_fine_tuned_on(toy):
    """downstream: {prepare: ...} is one `fdsl data prepare` run that the fine-tunes read; without a baseline
    the table has no gain column."""
    spec_ = "{prepare: {name: folder, from: %s, per_class: 3, val_from_train: 1, seed: 0}}" % (toy.parent / "ds")
    proc = fdsl_study(toy, "--set", "rows=scratch", "--set", "seeds=0", "--set", f"downstream.tiny={spec_}",
                      "--set", "baselines=[]", "--jobs", "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (data,) = (toy.parent / "out" / "runs").glob("data_tiny-*")
    assert sorted(os.listdir(data / "train")) == ["0", "1", "2"] and len(os.listdir(data / "val" / "0")) == 1
    (ft,) = (toy.parent / "out" / "runs").glob("ft_scratch_tiny_s0-*")
    assert f"data_dir: {data}\n" in (ft / "args.yaml").read_text()
    assert re.search(r"^\| from scratch \| 1 \| [\d.]+ \| [\d.]+ ± 0\.0 \|$", proc.stdout, re.MULTILINE)
    assert "gain" not in proc.stdout


def toy_study(toy, *sets) -> dict:
    return spec.load(str(toy), list(sets))


def test_keys_follow_everything_that_defines_a_run(toy):
    plan = Plan(toy_study(toy))
    names = set(plan.runs)
    assert len(names) == 6  # one database, one pre-training (seed 0 only), 4 fine-tunes
    assert names == set(Plan(toy_study(toy)).runs)  # deterministic
    per_seed = set(Plan(toy_study(toy, "pretrain_per_seed=true")).runs)
    assert len(per_seed) == 7 and sorted(n.split("-")[0] for n in per_seed - names) == ["ft_fractaldb_tiny_s1", "pre_fractaldb_s1"]
    other_db = set(Plan(toy_study(toy, "sources.fractaldb.render=--classes 3 --size 16 --no-progress")).runs)
    assert len(other_db & names) == 2  # only scratch's fine-tunes survive a change of the database


def test_a_set_may_have_its_own_rows_and_seeds(toy):
    """The papers' tables: every row at one size, a few rows at another, with their own seeds; the runs both
    sets need (the database, its pre-training) are shared."""
    study = toy_study(toy, "downstream.big={folder: %s, rows: [scratch], seeds: [0, 1, 2]}" % (toy.parent / "ds"))
    cells = sorted((r.meta["set"], r.meta["row"], r.meta["seed"]) for r in Plan(study).cells)
    assert cells == sorted([("tiny", row, seed) for row in ("scratch", "fractaldb") for seed in (0, 1)]
                           + [("big", "scratch", seed) for seed in (0, 1, 2)])
    assert sum(name.startswith("pre_") for name in Plan(study).runs) == 1
    for bad, message in (("downstream.big.rows=[nosuch]", "no source 'nosuch'"),
                         ("downstream.big.seeds=[1, 1]", "downstream.big.seeds")):
        with pytest.raises(spec.UserError, match=re.escape(message)):
            toy_study(toy, "downstream.big={folder: %s}" % (toy.parent / "ds"), bad)


def test_report_arithmetic_against_hand_computed_numbers():
    results_ = {"scratch": {0: 60.0, 1: 70.0, 2: 65.0}, "fractaldb": {0: 70.0, 1: 72.0, 2: 75.0},
                "scratch2x": {0: 61.0, 1: 67.0}, "solo": {1: 50.0}}
    rows = {r["row"]: r for r in aggregate.table(results_, ["scratch", "scratch2x"])}
    assert rows["scratch"]["mean_std"] == pytest.approx((65.0, 5.0))  # sqrt(((-5)^2 + 5^2 + 0^2) / 2)
    assert rows["fractaldb"]["mean_std"] == pytest.approx((217 / 3, (19 / 3) ** 0.5))  # squares 49/9+1/9+64/9
    assert rows["fractaldb"]["gains"]["scratch"] == {0: 10.0, 1: 2.0, 2: 10.0}
    assert aggregate.mean_std([10.0, 2.0, 10.0]) == pytest.approx((22 / 3, (64 / 3) ** 0.5))
    assert rows["fractaldb"]["gains"]["scratch2x"] == {0: 9.0, 1: 5.0}  # paired on the seeds both have
    assert aggregate.mean_std([9.0, 5.0]) == pytest.approx((7.0, 8 ** 0.5))
    assert rows["solo"]["gains"] == {"scratch": {1: -20.0}, "scratch2x": {1: -17.0}}
    assert rows["scratch"]["gains"] == {} and rows["scratch2x"]["gains"] == {}  # baselines have no gain
    assert aggregate.gain_text([10.0, 2.0, 10.0]) == "+7.3 ± 4.6 (+10.0 / +2.0 / +10.0)"
    assert aggregate.gain_text([-20.0]) == "-20.0 ± 0.0 (-20.0)"


def test_the_compute_line_replays_the_runners_order_on_measured_seconds():
    """a (10 s) -> b (5 s); c and d (3 s each) stand alone. On 2 jobs the longest chain (a, b: 15 s) starts first
    beside c; d follows c at 3 s; b follows a at 10 s: 15 s. On 1 job: 21 s. An unfinished dep does not block."""
    runs = [Run("ka", "a", "pretrain", []), Run("kb", "b", "finetune", [], ["a"]),
            Run("kc", "c", "finetune", []), Run("kd", "d", "finetune", [], ["x"])]
    seconds = {"a": 10.0, "b": 5.0, "c": 3.0, "d": 3.0}
    assert timing.wall_seconds(runs, seconds, 2) == 15.0
    assert timing.wall_seconds(runs, seconds, 1) == 21.0
    assert timing.wall_seconds(runs[2:], seconds, 2) == 3.0

    class FakePlan:
        def order(self):
            return runs

    c = timing.cost(FakePlan(), {n: {"seconds": s} for n, s in seconds.items()}, 2)
    assert (c["runs"], c["core_s"], c["wall_s"]) == (4, 21.0, 15.0)
    assert c["by_kind"]["finetune"] == (3, 11.0) and c["by_kind"]["build"] == (0, 0)
    assert timing.cost_line(c).startswith("Compute: 4 finished runs, 0.3 run-minutes (1 pretrain 0.2, 3 finetune")
    assert timing.cost_line(c).endswith("on 2 jobs as `fdsl study` orders them: 0.2 min.")


def test_templates_evaluate_fields_and_refuse_code():
    v = {"k": 2, "px": "{32 * k}", "split": "select", "ft": 60, "lr": "1e-3"}
    assert expand("--size {px} --it {4000 * k * k} --lr {lr}", v) == "--size 64 --it 16000 --lr 1e-3"
    assert expand("{'--select' if split == 'select' else ''}|{(200 * px + 511) // 512}", v) == "--select|25"
    assert expand("--out {out}", v, frozenset({"out"})) == "--out {out}"
    assert layer(v, {"ft": "{2 * ft}", "k": 4})["ft"] == "120"  # an override that names itself reads below
    assert expand("{px}", layer(v, {"k": 4})) == "128"  # a var built from others follows the override
    for bad in ("{__import__('os')}", "{k.real}", "{nope}", "{split * 2}"):
        with pytest.raises(TemplateError):
            expand(bad, v)


def test_emit_writes_slurm_and_mpirun_lists_naming_every_run(toy, tmp_path):
    plan = Plan(toy_study(toy))
    assert fdsl_main(["study", str(toy), "--emit", "slurm", str(tmp_path / "slurm")]) == 0
    assert fdsl_main(["study", str(toy), "--emit", "mpirun", str(tmp_path / "mpi")]) == 0
    stages = [(tmp_path / "slurm" / f"stage{k}.txt").read_text() for k in (1, 2, 3)]
    assert [len(s.splitlines()) for s in stages] == [3, 1, 2]  # database + scratch fine-tunes, pre-training, ...
    mpirun = (tmp_path / "mpi" / "mpirun.txt").read_text()
    for name in plan.runs:
        assert sum(f"--run {name}\n" in s for s in stages) == 1 and f"--run {name}\n" in mpirun
    assert "mpirun -np 1 " in mpirun and "# stage 3" in mpirun
    submit = (tmp_path / "slurm" / "submit.sh").read_text()
    assert "--array=0-2 study.slurm stage1.txt" in submit and "--dependency=afterok:$job" in submit
    assert "SLURM_ARRAY_TASK_ID" in (tmp_path / "slurm" / "study.slurm").read_text()
    resolved = stages[0].split()[4]  # python -m fdsl study STUDY --run NAME
    assert set(Plan(spec.load(resolved)).runs) == set(plan.runs)  # the lists load the same study


@pytest.mark.parametrize("change, message", [
    ("seed: 1\n", "toy.yaml: seed: unknown key"),
    ("rows: [scratch, rcdb]\n", "rows: no source 'rcdb'"),
    ("rows: [scratch@k4]\n", "unknown row variant '@k4'"),
    ("sources: {scratch: {scratch: true, database: x}}\n", "sources.scratch: give exactly one of"),
    ("recipe: {finetune: 'finetune {data} --epochs {nope}'}\n", "recipe.finetune: {nope}: no var named 'nope'"),
    ("seeds: [0, a]\n", "seeds: give whole numbers"),
    ("seeds: [0\n", "not valid YAML at line"),
])
def test_a_bad_study_file_is_one_line(toy, capsys, change, message):
    toy.write_text(toy.read_text() + change)
    assert fdsl_main(["study", str(toy), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdsl study: error: ") and message in err and err.count("\n") == 1, err


def test_a_bad_set_and_a_bad_run_are_one_line(toy, capsys):
    assert fdsl_main(["study", str(toy), "--set", "vars.epoch=2", "--dry-run"]) == 2
    assert "--set vars.epoch: no key 'epoch' here; known keys: common, epochs, model" in capsys.readouterr().err
    name = next(n for n in Plan(toy_study(toy)).runs if n.startswith("pre_"))
    assert fdsl_main(["study", str(toy), "--run", name]) == 2
    assert "run db_fractaldb-" in capsys.readouterr().err  # its database first


def test_digits_effect_study_keeps_effect_sh_recipe_and_variants():
    """studies/digits_effect.yaml: the row variants (@k render scale, @e epochs, @lines), scratch2x, SPLIT."""
    study = spec.load(os.path.join(REPO, "studies", "digits_effect.yaml"),
                      ["rows=scratch2x rcdb@k4@e96@lines fractaldb", "seeds=0", "vars.split=select"])
    commands = {run.name.rsplit("-", 1)[0]: " ".join(run.argv) for run in Plan(study).order()}
    assert "--size 128 --line-num-max 50" in commands["db_rcdb"]
    assert "--epochs 96" in commands["pre_rcdb@k4@e96@lines_s0"]
    assert "--size 64 --pad 2 --iterations 16000 --draw-type point_gray" in commands["db_fractaldb"]
    assert "--epochs 48 " in commands["pre_fractaldb_s0"]
    assert "--epochs 120 " in commands["ft_scratch2x_digits_s0"]
    assert commands["data_digits"].endswith("--train-per-class 30 --select")
    from fdsl.study.graph import row_label

    assert row_label(study, "rcdb@k4@e48") == "RCDB, rendered at 4x, 48 pre-training epochs"
    assert row_label(study, "visualatom@lines") == "VisualAtom, lines capped to the size"


def test_help_opens_with_examples_that_load(capsys, monkeypatch):
    from fdsl.cli import study as cli_study

    with pytest.raises(SystemExit) as stop:
        cli_study.main(["--help"])
    head = capsys.readouterr().out.splitlines()[:6]
    assert stop.value.code == 0 and head[0].startswith("usage: fdsl study ") and len(head[0]) < 110
    assert "examples:" in head
    monkeypatch.chdir(REPO)
    examples = [line.split("  ")[1].strip() for line in cli_study.EXAMPLES.splitlines()
                if line.startswith("  fdsl study ")]
    assert len(examples) >= 5
    for line in examples:
        args = cli_study.build_parser().parse_args(shlex.split(line)[2:])
        spec.load(args.study, args.sets)


def test_a_shared_pre_training_runs_once_and_workers_stop_with_their_runner(toy):
    """Rows that differ only in what fine-tuning sees share one pre-training; and a worker whose runner is
    killed alone (kill -9 of its pid, not its group) exits instead of running on."""
    study = toy_study(toy, "variants={f: {vars: {unused: '{value}'}}}", "rows=[fractaldb, fractaldb@f2]")
    plan = Plan(study)
    assert [n.split("-")[0] for n in plan.runs if n.startswith("pre_")] == ["pre_fractaldb_s0"]
    assert len(plan.cells) == 4 and len({c.deps[-1] for c in plan.cells}) == 1
    script = (f"import os, sys, time; sys.path.insert(0, {REPO!r})\n"
              "from fdsl.study import worker\n"
              "pool = worker.pool(1, 1); pid = pool.submit(os.getpid).result(); busy = pool.submit(time.sleep, 60)\n"
              "print(pid, flush=True); time.sleep(60)\n")  # the worker is busy in a run when its runner dies
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(runner.stdout.readline())
    runner.kill()
    runner.wait()
    deadline = time.time() + 20
    while time.time() < deadline and alive(child):
        time.sleep(0.2)
    assert not alive(child)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "zombie" not in status.read()
    except FileNotFoundError:
        return False
