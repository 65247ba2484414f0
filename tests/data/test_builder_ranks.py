"""Many ranks, one database: rank discovery, the class split, concurrent starts, a killed rank, mpirun,
the final check by rank 0, --estimate, and the engine's rendezvous and shard epoch size."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fdsl import launch
from fdsl.data import builder, registry
from tests.helpers import REPO, tree_hashes

SMALL = ["rcdb", "--size", "48", "--classes", "6", "--instances", "4", "--line-num-max", "30", "--no-progress"]
MPIRUN = shutil.which("mpirun")


def fake_ranks(size: int, job: str, **extra) -> list[dict]:
    """Environments of `srun -n size` ranks on one node (no MPI involved)."""
    return [{**os.environ, "PYTHONPATH": REPO, "SLURM_PROCID": str(r), "SLURM_NTASKS": str(size),
             "SLURM_LOCALID": str(r), "SLURM_NNODES": "1", "SLURM_JOB_ID": job, **extra} for r in range(size)]


def start(args, env):
    return subprocess.Popen([sys.executable, "-m", "fdsl", "render", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One-process builds, PNG and shards."""
    root = tmp_path_factory.mktemp("ref")
    from fdsl.cli.main import main

    assert main(["render", *SMALL, "--out", str(root / "png")]) == 0
    assert main(["render", *SMALL, "--out", str(root / "wds"), "--format", "wds", "--shard-size", "5"]) == 0
    return {"png": tree_hashes(root / "png"), "wds": tree_hashes(root / "wds")}


def test_launchers_are_read_in_order():
    ompi = {"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "PMIX_NAMESPACE": "77", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert launch.from_environment(ompi) == launch.Launch(3, 8, 1, 4, "openmpi", "77")
    assert not launch.from_environment(ompi).one_node
    assert launch.from_environment({"PMI_RANK": "1", "PMI_SIZE": "2"}).launcher == "pmi"
    slurm = launch.from_environment({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
                                     "SLURM_JOB_ID": "9", "SLURM_STEP_ID": "0"})
    assert (slurm.rank, slurm.world_size, slurm.one_node, slurm.job) == (1, 2, True, "9.0")
    assert launch.from_environment({}) == launch.Launch()
    blocks = [builder.rank_block(3, 13, launch.Launch(r, 4)) for r in range(4)]
    assert blocks == [(3, 5), (5, 8), (8, 10), (10, 13)]


@pytest.mark.parametrize("fmt", ["png", "wds"])
def test_two_ranks_started_together_equal_one_process(tmp_path, reference, fmt):
    out = tmp_path / "db"
    extra = ["--format", "wds", "--shard-size", "5"] if fmt == "wds" else []
    procs = [start([*SMALL, "--out", out, *extra], env) for env in fake_ranks(2, f"job-{fmt}")]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    first, second = (12, 12) if fmt == "png" else (15, 9)  # shards go to the rank their first sample is in
    assert f"rank 0/2: classes 0-2, wrote {first}, skipped 0" in outputs[0][0]
    assert f"rank 1/2: classes 3-5, wrote {second}, skipped 0" in outputs[1][0]
    assert "classes 0-5 complete, checked by rank 0" in outputs[0][0]
    assert tree_hashes(out) == reference[fmt]
    assert sorted(os.listdir(out)) == sorted(set(os.listdir(out)) - {builder.RANKS_DIR})  # markers removed


def test_a_killed_rank_then_the_same_command_resumes(tmp_path, fdsl_cli):
    args = ["visualatom", "--classes", "4", "--instances", "10", "--no-progress"]  # ~3 ms an image: time to kill
    assert fdsl_cli("render", *args, "--out", tmp_path / "ref")[0] == 0
    out = tmp_path / "db"
    procs = [start([*args, "--out", out], env) for env in fake_ranks(2, "killed")]
    first_of_rank_1 = out / "00002" / "00002_0000.png"
    deadline = time.time() + 60
    while time.time() < deadline and not first_of_rank_1.exists():
        pass  # poll tightly: rank 1 needs ~60 ms for the rest of its images
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    written = sum(len(os.listdir(out / c)) for c in ("00002", "00003") if (out / c).exists())
    assert 1 <= written < 20  # killed mid-build
    time.sleep(0.5)
    assert procs[0].poll() is None  # rank 0 waits for rank 1 rather than calling an incomplete build done
    procs[0].send_signal(signal.SIGKILL)  # as mpirun / srun stop the rest of a job
    procs[0].wait()
    again = [start([*args, "--out", out], env) for env in fake_ranks(2, "resumed")]
    outputs = [p.communicate(timeout=120) for p in again]
    assert [p.returncode for p in again] == [0, 0], outputs
    assert "complete, checked by rank 0" in outputs[0][0]
    assert tree_hashes(out) == tree_hashes(tmp_path / "ref")


def test_rank_zero_reports_units_left_missing(tmp_path):
    plan = builder.BuildPlan(registry.create("rcdb", classes=4, instances=2, size=32), str(tmp_path))
    builder.build(plan, progress=False)
    os.remove(tmp_path / plan.db.image_path(2, 1))
    assert builder.incomplete_units(plan, 0, 4) == [2]
    shards = builder.BuildPlan(plan.db, str(tmp_path / "wds"), fmt="wds", shard_size=3)
    builder.build(shards, progress=False)
    os.remove(tmp_path / "wds" / "SHARDS-000001.tar")
    assert builder.incomplete_units(shards, 0, 4) == [1]


@pytest.mark.skipif(MPIRUN is None, reason="OpenMPI (mpirun) not installed")
def test_mpirun_build_equals_one_process(tmp_path, reference):
    env = {**os.environ, "PYTHONPATH": REPO, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    cmd = [MPIRUN, "-np", "2", "--oversubscribe", "-x", "PYTHONPATH", sys.executable, "-m", "fdsl", "render",
           *SMALL, "--out", str(tmp_path / "db"), "--workers", "2"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 1/2: classes 3-5" in done.stdout and "complete, checked by rank 0" in done.stdout
    assert tree_hashes(tmp_path / "db") == reference["png"]


@pytest.mark.skipif(MPIRUN is None, reason="OpenMPI (mpirun) not installed")
def test_mpirun_training_rendezvous_without_master_addr():
    pytest.importorskip("mpi4py")
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=REPO, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    code = ("import torch; from fdsl.engine import distributed as d; info = d.init('cpu', timeout_s=60); "
            "t = d.all_reduce_sum(torch.tensor([info.rank + 1.0]), info); "
            "import sys; sys.stdout.write(f'sum {int(t.item())}\\n'); sys.stdout.flush(); "  # one write: ranks do not interleave
            "d.shutdown(info, False)")
    done = subprocess.run([MPIRUN, "-np", "2", "--oversubscribe", "-x", "PYTHONPATH", sys.executable, "-c", code],
                          env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0 and done.stdout.count("sum 3") == 2, done.stdout + done.stderr


def test_several_machines_without_master_addr_or_mpi4py_fail_at_once(monkeypatch):
    from fdsl.engine import distributed
    from fdsl.errors import UserError

    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FDSL_MPI4PY", "0")  # as if mpi4py were not installed
    for name, value in {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
                        "OMPI_COMM_WORLD_LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    started = time.time()
    with pytest.raises(UserError, match="no MASTER_ADDR.*fdsl\\[mpi\\]"):
        distributed.init("cpu")
    assert time.time() - started < 5
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "8")  # every rank on this machine: localhost works
    assert launch.rendezvous(launch.from_environment()) == ("localhost", "8888")


def test_estimate_prints_rates_and_sizes_and_writes_nothing(tmp_path, fdsl_cli):
    out = tmp_path / "never"
    code, text, _ = fdsl_cli("render", *SMALL, "--classes", "21000", "--out", out, "--estimate", "--workers", "64")
    assert code == 0 and not out.exists()
    assert "21,000 classes x 4 images" in text and "images/s per core" in text
    assert "with 64 worker(s) x 1 rank(s)" in text and "PNG folders" in text and "shards (--format wds)" in text


def test_shard_epoch_is_the_shards_sample_count_when_fdsl_wrote_them(tmp_path):
    from dataclasses import replace

    from fdsl.engine.data import DataSpec, shard_epoch_size

    plan = builder.BuildPlan(registry.create("rcdb", classes=5, instances=4, size=32), str(tmp_path), fmt="wds",
                             shard_size=6)
    builder.build(plan, progress=False)
    urls = [str(tmp_path / f"SHARDS-{k:06d}.tar") for k in range(4)]
    args = DataSpec(dataset_size=None, trainshards=str(tmp_path / "SHARDS-{000000..000003}.tar"), num_classes=5)
    size, rule = shard_epoch_size(args, urls)
    assert size == 20 and "manifest.json" in rule
    assert shard_epoch_size(args, urls[:2])[0] == 12
    os.remove(tmp_path / "manifest.json")
    assert shard_epoch_size(args, urls) == (5000, shard_epoch_size(args, urls)[1])
    assert "published rule" in shard_epoch_size(args, urls)[1]
    args = replace(args, dataset_size=7)
    assert shard_epoch_size(args, urls) == (7, "--dataset_size")
