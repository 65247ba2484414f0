"""The end-to-end scripts in exe_scripts/: every exe_*_test.sh runs at toy scale (tiny images, one short epoch,
CPU) under each launcher and data format, and every full-scale script's commands parse with fdsl's own parsers."""
from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO
from tests.helpers.runs import free_port

EXE = os.path.join(REPO, "exe_scripts")
TINY_VIT = "--model-kwargs patch_size=8 embed_dim=32 depth=1 num_heads=2"
CPU = "-j 0 --device cpu --log-interval 100 --dist-timeout 120"


def script_env(tmp_path, **extra) -> dict:
    env = {**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "WORKERS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "OUTPUT": str(tmp_path / "output"), "DB_DIR": str(tmp_path / "db"),
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    env.pop("PYTHONPATH", None)  # the scripts must find fdsl in their own checkout
    return {**env, **{k: str(v) for k, v in extra.items()}}


def run_script(name, env, timeout=300) -> subprocess.CompletedProcess:
    """Run exe_scripts/NAME from the folder above OUTPUT (the test's tmp_path)."""
    return subprocess.run(["bash", os.path.join(EXE, name)], env=env, cwd=os.path.dirname(env["OUTPUT"]),
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def ft_data(tmp_path_factory):
    """A 10-class train/val image folder at 32 px (4 + 2 images per class: one batch of 32): the fine-tuning set's shape."""
    root = tmp_path_factory.mktemp("ft")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in range(10):
            os.makedirs(root / split / str(c))
            for i in range(n):
                img = rng.integers(0, 60, (32, 32), dtype=np.uint8) + np.uint8(15 * c)
                Image.fromarray(img).save(root / split / str(c) / f"{i}.png")
    return root


# script, launcher, pre-training data format, extra environment (tiny images and models for a CPU)
TOY_RUNS = [
    ("exe_fractaldb_test.sh", "none", "png", {"INSTANCES": 4}),
    ("exe_exfractaldb_test.sh", "none", "png", {"INSTANCES": 2, "PRE_EPOCHS": 1, "FT_EPOCHS": 1, "BATCH": 8}),
    ("exe_rcdb_test.sh", "mpirun", "wds", {"INSTANCES": 4, "SHARD_SIZE": 10, "BATCH": 8}),
    ("exe_visualatom_test.sh", "torchrun", "png", {"INSTANCES": 4, "BATCH": 8, "FT_BATCH": 8}),
    ("exe_1pfrac_test.sh", "none", "png", {"PRE_EPOCHS": 2, "FT_CLASSES": 10}),
    ("exe_ofdb_test.sh", "none", "onthefly", {"PRE_EPOCHS": 2, "BATCH": 4, "INSTANCES": 2, "FT_DATA": None}),
]  # FT_DATA None: the twin's own default, scikit-learn's digits


@pytest.mark.slow
@pytest.mark.parametrize("script,launcher,fmt,extra", TOY_RUNS, ids=[r[0] for r in TOY_RUNS])
def test_toy_run(script, launcher, fmt, extra, ft_data, tmp_path):
    if launcher == "mpirun" and shutil.which("mpirun") is None:
        pytest.skip("OpenMPI (mpirun) not installed")
    nprocs = 1 if launcher == "none" else 2
    vit = "" if script == "exe_fractaldb_test.sh" else TINY_VIT  # ResNet-18 there
    tiny = f"--input-size 3 32 32 {vit} {CPU}"
    env = script_env(tmp_path, FT_DATA=ft_data, LAUNCHER=launcher, NGPUS=nprocs, NPERNODE=nprocs, FORMAT=fmt,
                     MPI_ARGS="--oversubscribe", RENDER_ARGS="--size 32", PRE_ARGS=tiny, FT_ARGS=tiny)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    for key in [k for k, v in extra.items() if v is None]:
        env.pop(key)
    proc = run_script(script, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    if "FT_DATA" not in env:  # exported the digits next to OUTPUT and fine-tuned on them
        assert "FT_DATA is unset: fine-tuning on scikit-learn's digits" in out
        assert len(os.listdir(tmp_path / "data" / "digits" / "train")) == 10
    if nprocs > 1:
        assert f"world=2 ({'openmpi' if launcher == 'mpirun' else 'torchrun'}, cpu)" in out, out[-3000:]
    pre_runs = os.listdir(tmp_path / "output" / "pretrain")
    assert len(pre_runs) == 1 and os.path.isfile(tmp_path / "output" / "pretrain" / pre_runs[0] / "last.pth.tar")
    if fmt == "onthefly":
        assert not (tmp_path / "db").exists()  # nothing written to disk
    elif fmt == "wds":
        assert any(n.startswith("SHARDS-") for n in os.listdir(tmp_path / "db"))
    assert "pretrained: loaded" in out and "missing []" in out  # fine-tuning started from the pre-trained weights
    [ft_run] = os.listdir(tmp_path / "output" / "finetune")
    with open(tmp_path / "output" / "finetune" / ft_run / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and float(rows[-1]["eval_top1"]) >= 0


def test_missing_finetune_data_fails_before_any_work(tmp_path):
    env = script_env(tmp_path, FT_DATA=tmp_path / "nowhere")
    proc = run_script("exe_rcdb_test.sh", env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        (f"exe_rcdb_1k.sh: error: fine-tuning data set not found: {tmp_path / 'nowhere'} "
        "(set FT_DATA to a folder holding train/<class>/ and val/<class>/ images)")]
    assert not (tmp_path / "db").exists() and not (tmp_path / "output").exists()


def test_missing_database_and_checkpoint_and_bad_settings_are_one_line(tmp_path, ft_data):
    cases = [
        ({"STAGES": "pretrain"}, "pre-training database not found"),
        ({"STAGES": "finetune"}, "pre-trained checkpoint not found"),
        ({"LAUNCHER": "slurm"}, "unknown LAUNCHER=slurm"),
        ({"FORMAT": "lmdb"}, "unknown FORMAT=lmdb"),
        ({"STAGES": "render pretrian"}, "unknown stage 'pretrian'"),
    ]
    for extra, message in cases:
        proc = run_script("exe_visualatom_test.sh", script_env(tmp_path, FT_DATA=ft_data, **extra))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (extra, proc.stderr)
        assert message in proc.stderr, proc.stderr
        assert not (tmp_path / "db").exists() and not (tmp_path / "output").exists()


# Full-scale scripts: DRY_RUN=1 prints each command; the renderer lines are run with FDSL=echo to see the fdsl
# render command they make, and every fdsl command must parse (configs included) with fdsl's own parsers.
FULL_SCALE = [
    ("exe_fractaldb_1k.sh", {}), ("exe_exfractaldb_1k.sh", {}), ("exe_exfractaldb_21k.sh", {}),
    ("exe_exfractaldb_21k.sh", {"FORMAT": "onthefly"}), ("exe_rcdb_1k.sh", {}), ("exe_rcdb_21k.sh", {}),
    ("exe_rcdb_21k.sh", {"LAUNCHER": "torchrun"}), ("exe_visualatom_1k.sh", {}), ("exe_visualatom_21k.sh", {}),
    ("exe_1pfrac.sh", {"DELTA": "0.01"}), ("exe_ofdb_1k.sh", {}), ("exe_ofdb_1k.sh", {"OFDB": "3d"}),
]


def dry_run_commands(script, tmp_path, extra) -> list[list[str]]:
    proc = run_script(script, script_env(tmp_path, DRY_RUN=1, **extra))
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


def fdsl_argv(cmd, tmp_path) -> tuple[str, list[str]]:
    """(command, argv) of the fdsl command a printed line runs."""
    if cmd[0] == "env":  # env OUT=... bash renderers/X.sh ...: ask the renderer what it would run
        env = {**os.environ, "FDSL": "echo fdsl", cmd[1].split("=")[0]: cmd[1].split("=", 1)[1]}
        echoed = subprocess.run(cmd[2:], env=env, capture_output=True, text=True, check=True).stdout.split()
        return "render", echoed[echoed.index("render") + 1:]
    if "-m" in cmd and "fdsl" in cmd:
        rest = cmd[cmd.index("fdsl") + 1:]
        return rest[0], rest[1:]
    script = next(c for c in cmd if c.endswith(("pretrain.py", "finetune.py")))
    return os.path.basename(script)[:-3], cmd[cmd.index(script) + 1:]


@pytest.mark.parametrize("script,extra", FULL_SCALE, ids=[f"{s}-{'-'.join(e.values()) or 'default'}"
                                                           for s, e in FULL_SCALE])
def test_full_scale_commands_parse(script, extra, tmp_path):
    from fdsl.cli import args as cli_args
    from fdsl.cli.render import build_parser
    from fdsl.data import registry

    commands = dry_run_commands(script, tmp_path, extra)
    kinds = []
    for cmd in commands:
        kind, argv = fdsl_argv(cmd, tmp_path)
        kinds.append(kind)
        if kind == "render":
            build_parser(registry.get(argv[0])).parse_args(argv[1:])
        else:
            args = cli_args.parse(kind, argv)
            assert args.epochs >= 90 and (kind == "pretrain" or args.pretrained_path)
        launcher = cmd[0] if cmd[0] == "mpirun" else ("torchrun" if "torch.distributed.run" in cmd else None)
        assert kind == "render" or launcher == extra.get("LAUNCHER", "mpirun"), cmd
    expected = ["pretrain", "finetune"] if extra.get("FORMAT") == "onthefly" else ["render", "pretrain", "finetune"]
    assert kinds == expected


def write_run(root, name, top1_per_epoch):
    os.makedirs(root / name)
    with open(root / name / "summary.csv", "w") as f:
        f.write("epoch,train_loss,eval_loss,eval_top1,eval_top5\n")
        f.writelines(f"{e},1.0,1.0,{t},99.0\n" if t is not None else f"{e},1.0,,,\n"
                     for e, t in enumerate(top1_per_epoch))


def test_effect_report_pairs_seeds_and_draws_the_chart(tmp_path):
    """The effect study's report (fdsl study's, on studies/digits_effect.yaml): runs' final top-1 (not the
    best), mean +- std, gains over scratch and scratch2x paired by seed; an unfinished run is not reported."""
    from fdsl.study import local, report, spec
    from fdsl.study.graph import Plan

    study = spec.load(os.path.join(REPO, "studies", "digits_effect.yaml"), [
        f"out={tmp_path}", "seeds=0 1 2", "rows=scratch scratch2x fractaldb onepfrac0.01 rcdb"])
    plan = Plan(study)
    top1 = {("scratch", 0): [10.0, 60.0], ("scratch", 1): [10.0, 70.0], ("scratch", 2): [10.0, 65.0],
            ("fractaldb", 0): [90.0, 70.0], ("fractaldb", 1): [90.0, 72.0], ("fractaldb", 2): [90.0, 75.0],
            ("onepfrac0.01", 0): [50.0], ("scratch2x", 0): [61.0], ("scratch2x", 1): [67.0],
            ("rcdb", 0): [80.0, None]}  # unfinished: its last epoch was not tested yet
    finished = {}
    for run in plan.cells:
        cell = (run.meta["row"], run.meta["seed"])
        if cell in top1:
            write_run(tmp_path / "runs", run.name, top1[cell])
            finished[cell] = local.finish(study, run, [], 1.0) is None
    assert finished.pop(("rcdb", 0)) is False and all(finished.values())
    text = report.write(study, plan, "fdsl study studies/digits_effect.yaml")
    assert ("| FractalDB | 3 | 70.0 / 72.0 / 75.0 | 72.3 ± 2.5 | +7.3 ± 4.6 (+10.0 / +2.0 / +10.0) | "
            "+7.0 ± 2.8 (+9.0 / +5.0) |") in text
    assert "| 1p-frac, delta 0.01 | 1 | 50.0 | 50.0 ± 0.0 | -10.0 ± 0.0 (-10.0) | -11.0 ± 0.0 (-11.0) |" in text
    assert "| from scratch | 3 | 60.0 / 70.0 / 65.0 | 65.0 ± 5.0 |  |  |" in text
    assert "| from scratch, 2x epochs | 2 | 61.0 / 67.0 | 64.0 ± 4.2 |  |  |" in text
    assert "RCDB" not in text
    assert text in (tmp_path / "report.md").read_text()
    assert "fractaldb,FractalDB,1,72.0,2.00,5.00" in (tmp_path / "report.csv").read_text()
    assert (tmp_path / "report.png").stat().st_size > 5000


def test_demo_report_uses_the_last_tested_epoch(tmp_path):
    write_run(tmp_path, "fdsl", [50.0, None, 81.0, None, 79.5])
    write_run(tmp_path, "scratch", [40.0, None, 72.0])
    proc = subprocess.run([sys.executable, os.path.join(EXE, "demo_report.py"), f"from FDSL={tmp_path / 'fdsl'}",
                           f"from scratch={tmp_path / 'scratch'}"], capture_output=True, text=True, check=True)
    assert "79.5%   +7.5 points over from scratch" in proc.stdout and "72.0%" in proc.stdout


@pytest.mark.slow
def test_effect_sh_runs_a_row_end_to_end(tmp_path):
    """effect.sh (fdsl study studies/digits_effect.yaml) at toy scale: one seed, 1p-frac at delta 0.01 (4 classes x
    16 images), one epoch each."""
    env = {**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "SEEDS": "0", "ROWS": "onepfrac0.01", "PLATEAU": "1", "SMALL_CLASSES": "4", "SMALL_INSTANCES": "16", "PRE_EPOCHS": "1",
           "FT_EPOCHS": "1"}
    proc = subprocess.run(["bash", os.path.join(EXE, "effect.sh"), str(tmp_path / "fx")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "| 1p-frac, delta 0.01 | 1 |" in proc.stdout and "| from scratch | 1 |" in proc.stdout
    assert "| from scratch, 2x epochs | 1 |" in proc.stdout
    runs = tmp_path / "fx" / "runs"
    (scratch2x,) = runs.glob("ft_scratch2x_digits_s0-*")
    assert "\nepochs: 2\n" in (scratch2x / "args.yaml").read_text()
    assert (tmp_path / "fx" / "report.png").is_file()
    (db,) = runs.glob("db_onepfrac0.01-*")
    with open(db / "manifest.json") as f:
        assert '"delta": 0.01' in f.read()


def test_row_variants_set_the_render_scale_epochs_and_line_cap():
    """effect.sh's ablation rows: rcdb@k4@e96@lines renders at 4x for 96 epochs with capped lines; a plain row
    keeps the recipe (render 2x, 48 epochs); an unknown variant is one line naming it."""
    show = 'show() { echo "$RENDER_SCALE $PRE_EPOCHS ${CAP_LINES:-0}"; }'
    def run(row):
        return subprocess.run(["bash", "-c", f'source "{EXE}/_digits.sh"; {show}; with_variant "{row}" show'],
                              capture_output=True, text=True, check=False, env={**os.environ, "RENDER_SCALE": "", "PRE_EPOCHS": ""})
    assert run("rcdb@k4@e96@lines").stdout.split() == ["4", "96", "1"]
    assert run("fractaldb").stdout.split() == ["2", "48", "0"]
    assert run("fractaldb@e24").stdout.split() == ["2", "24", "0"]
    bad = run("rcdb@big")
    assert bad.returncode == 2 and "unknown row variant '@big'" in bad.stderr


def test_select_split_is_the_held_out_training_digits(tmp_path):
    """SPLIT=select tests on the training digits that --train-per-class left out, never on the 797 test digits."""
    subprocess.run([sys.executable, os.path.join(EXE, "export_digits.py"), str(tmp_path), "--train-per-class", "30",
                    "--select"], check=True, capture_output=True)
    def indices(split):
        return {int(f[:4]) for d in os.listdir(tmp_path / split) for f in os.listdir(tmp_path / split / d)}
    train, val = indices("train"), indices("val")
    assert len(train) == 300 and len(val) == 700 and not train & val and max(train | val) < 1000


def test_effect_report_names_the_row_variants():
    from fdsl.study import spec
    from fdsl.study.graph import row_label

    study = spec.load(os.path.join(REPO, "studies", "digits_effect.yaml"))
    assert row_label(study, "rcdb@k4@e48") == "RCDB, rendered at 4x, 48 pre-training epochs"
    assert row_label(study, "visualatom@lines") == "VisualAtom, lines capped to the size"
    assert row_label(study, "ofdb2d") == "2D-OFDB"
