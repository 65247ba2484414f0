"""Two CPU processes (gloo) through torchrun and, where installed, OpenMPI's mpirun."""
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import REPO
from tests.helpers.runs import TINY_VIT, free_port, make_folder, read_summary

pytestmark = pytest.mark.slow  # every test here starts two training processes

ARGS = [*TINY_VIT, "-j", "0", "-b", "4", "--epochs", "2", "--opt", "adamw", "--lr", "1e-3", "--sched", "cosine_iter",
        "--warmup-epochs", "1", "--repeated-aug", "--mixup", "0.8", "--cutmix", "1.0", "--log-interval", "2",
        "--dist-timeout", "60"]


def env(**extra):
    return {**os.environ, "PYTHONPATH": REPO, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", **extra}


def check_run(proc, run_dir):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("world=2") == 1, proc.stdout  # rank 0 alone prints
    assert [r["epoch"] for r in read_summary(run_dir)] == ["0", "1"]
    assert torch.load(run_dir / "last.pth.tar", weights_only=True)["epoch"] == 1


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("db"), classes=4, per_class=8)


def test_torchrun_two_processes(db, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "fdsl", "pretrain", db, *ARGS, "--output", str(tmp_path), "--experiment", "tr"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=240, check=False)
    assert "(torchrun, cpu)" in proc.stdout
    check_run(proc, tmp_path / "tr")


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="OpenMPI (mpirun) not installed")
def test_mpirun_two_processes(db, tmp_path):
    e = env(MASTER_PORT=str(free_port()), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "-np", "2", "--oversubscribe", "-x", "PYTHONPATH", "-x", "MASTER_PORT", "-x", "WANDB_MODE",
           sys.executable, "-m", "fdsl", "pretrain", db, *ARGS, "--output", str(tmp_path), "--experiment", "mpi"]
    proc = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=240, check=False)
    assert "(openmpi, cpu)" in proc.stdout, proc.stdout + proc.stderr
    check_run(proc, tmp_path / "mpi")


def test_torchrun_finetune_validates_uneven_shards(tmp_path):
    """15 validation images over 2 ranks (8 + 7), a model with BatchNorm buffers; every image counted once."""
    root = make_folder(tmp_path / "ft", classes=5, per_class=3, splits=("train", "val"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "fdsl", "finetune", root, "--model", "resnet18", "--img-size", "16", "-b", "2", "--epochs", "1",
           "-j", "0", "--sched", "none", "--dist-timeout", "60", "--output", str(tmp_path), "--experiment", "ft"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    top1 = float(read_summary(tmp_path / "ft")[0]["eval_top1"])
    assert abs(top1 * 15 / 100 - round(top1 * 15 / 100)) < 1e-6  # a whole number of the 15 images


def test_a_failed_rank_does_not_hang_the_others(db, tmp_path):
    """Rank 1 dies on bad input before joining; rank 0 gives up after --dist-timeout with one line."""
    port = str(free_port())
    common = [sys.executable, "-m", "fdsl", "pretrain", *ARGS, "--dist-timeout", "5", "--output", str(tmp_path)]
    start = time.time()
    rank0 = subprocess.Popen([*common, db], env=env(RANK="0", WORLD_SIZE="2", MASTER_PORT=port),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rank1 = subprocess.run([*common, str(tmp_path / "missing")], env=env(RANK="1", WORLD_SIZE="2", MASTER_PORT=port),
                           capture_output=True, text=True, timeout=120, check=False)
    _, err0 = rank0.communicate(timeout=120)
    assert rank1.returncode != 0 and rank0.returncode != 0
    assert time.time() - start < 90
    assert "peer" in err0 and len(err0.strip().splitlines()) == 1, err0
