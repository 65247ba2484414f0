"""bench/gpucheck, the first command on a GPU: its steps, caps, dry run, wheels and time limits, on the CPU."""
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest

from bench.gpucheck import harness as gpucheck
from tests.helpers import REPO

NAMES = ["device", "cuda-tests", "render", "sync", "train-deit-tiny", "train-deit-base", "fp16", "ddp", "kmeans", "ssl",
         "loader"]
SIZE_FLAGS = {"--size", "--seconds", "--classes", "--batch", "--img-size", "--model-kwargs", "--batch-size", "--steps",
              "--repeats", "--arch", "--rounds", "--threads", "--queue-size", "--points", "--images", "--workers"}
OPTIONAL = ["webdataset", "braceexpand", "isal", "faiss", "wandb"]


def blocked(root) -> str:
    """A folder that, first on PYTHONPATH, makes the packages the GPU machine lacks unimportable."""
    for name in OPTIONAL:
        os.makedirs(root / name, exist_ok=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    return str(root)


def test_every_step_is_wired_in_priority_order_and_the_caps_fit_seven_minutes(capsys):
    assert [s.name for s in gpucheck.STEPS] == NAMES
    assert sum(s.cap_s for s in gpucheck.STEPS) <= gpucheck.BUDGET_S == 420
    assert gpucheck.main(["--list"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[:2] == ["total", f"{sum(s.cap_s for s in gpucheck.STEPS)}s"] and "420s" in last


def test_the_dry_run_runs_the_gpu_command_lines_with_only_device_and_sizes_swapped():
    for step in gpucheck.STEPS:
        gpu, dry = step.argv(False), step.argv(True)
        assert gpu[0] == dry[0] == sys.executable
        assert set(step.dry) <= SIZE_FLAGS, step.name
        assert [a for a in gpu if a.startswith("--")] == [a for a in dry if a.startswith("--")], step.name
        on_gpu = [value for flag, value in zip(gpu, gpu[1:]) if flag in gpucheck.DEVICE_FLAGS]
        on_cpu = [value for flag, value in zip(dry, dry[1:]) if flag in gpucheck.DEVICE_FLAGS]
        assert set(on_gpu) == ({"cuda"} if step.name != "cuda-tests" else set()), step.name
        assert on_cpu == ["cpu"] * len(on_gpu), step.name
        assert gpucheck.dry_swap(step.gpu, {}) == [a.replace("cuda", "cpu") if a == "cuda" and b in
                                                   gpucheck.DEVICE_FLAGS else a for b, a in zip(["", *step.gpu], step.gpu)]
        if gpu[1].endswith(".py"):
            assert os.path.exists(gpu[1])
    render = gpucheck.STEPS[2].argv(False)
    assert render[render.index("--size") + 1:render.index("--size") + 3] == ["256", "512"]
    assert render[render.index("--databases") + 1:] == gpucheck.DATABASES and "--no-numba" in render
    assert gpucheck.dry_swap(["x", "--device", "cuda", "--size", "1", "2", "--amp"], {"--size": ["3"]}) == \
        ["x", "--device", "cpu", "--size", "3", "--amp"]


def test_figures_are_read_from_the_scripts_output():
    train = ("train step: bare timm loop    1000.0 img/s | fdsl engine     950.0 img/s | ratio 0.950\n"
             "engine step fed by it:     900.0 img/s | on random tensors     950.0 img/s | ratio 0.947 (target >= 0.9)")
    assert gpucheck.train_figure(train) == "engine 950 img/s = 0.950x bare timm; fed by device batches 900 img/s = 0.947x"
    assert gpucheck.pytest_summary("...\n==== 5 passed, 2 skipped in 3.1s ====\n") == "5 passed, 2 skipped in 3.1s"
    ssl = ("moco: bare 10.0 img/s (1 ms/step)  fdsl 9.5 img/s (1 ms/step)\nmoco: fdsl/bare 0.950x  (throughput)\n"
           "byol: bare 8.0 img/s (1 ms/step)  fdsl 7.6 img/s (1 ms/step)\nbyol: fdsl/bare 0.950x  (throughput)")
    assert gpucheck.ssl_figure(ssl) == "moco 9.5 img/s = 0.950x bare; byol 7.6 img/s = 0.950x bare"
    render = ("database      size  batched img/s\nfractaldb       256       61,234.5       -\n"
              "rcdb            512        9,876.0       -\n")
    assert gpucheck.render_figure(render) == "fractaldb@256 61,234; rcdb@512 9,876 img/s"


def test_a_step_over_its_cap_is_killed_with_its_children_and_reported():
    sleeper = ["-c", ("import subprocess, sys, time; "
                      "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                      "print('started', flush=True); time.sleep(60)")]
    step = gpucheck.Step("sleep", "sleeps", 2, sleeper)
    start = time.perf_counter()
    row = gpucheck.run_step(step, dry=False, remaining_s=100)
    assert time.perf_counter() - start < 15  # the grandchild holding the pipe was killed too
    assert row["result"] == "fail: over its 2s cap" and row["rc"] is None and row["tail"] == ["started"]
    assert gpucheck.run_step(step, dry=False, remaining_s=1)["result"] == "skipped: over the budget"


@pytest.mark.slow
def test_cuda_tests_are_selected_by_the_cuda_marker():
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           "tests/engine/test_trainer_options.py"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    selected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert selected == [f"tests/engine/test_trainer_options.py::test_cuda_amp[{d}]" for d in ("float16", "bfloat16")]
    assert all(os.path.exists(os.path.join(REPO, f)) for f in gpucheck.CUDA_TEST_FILES)


@pytest.mark.slow
def test_the_whole_dry_run_passes_without_the_packages_the_gpu_machine_lacks(tmp_path):
    """bash bench/gpu_check.sh --dry-run, as on the GPU machine: webdataset, isal, faiss and wandb unimportable,
    python3 only. Every step passes, faiss reports n/a with the reason. About 2 minutes on 2 cores
    (11 fresh interpreters, ~7 s of imports each)."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": blocked(tmp_path / "blocked"), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run", "--json", str(report)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rows = {r["step"]: r for r in json.loads(report.read_text())["steps"]}
    assert list(rows) == NAMES and all(r["result"] == "pass" for r in rows.values())
    assert "missing: webdataset, isal, faiss, wandb" in rows["device"]["figure"]
    assert "faiss n/a (not installed here" in rows["kmeans"]["figure"] and "torch " in rows["kmeans"]["figure"]
    assert "same seed -> same images" in rows["sync"]["figure"] and "no host read on the meta" in rows["sync"]["figure"]
    assert "fractaldb@32" in rows["render"]["figure"] and "ofdb3d@32" in rows["render"]["figure"]
    assert "DistributedDataParallel step" in rows["ddp"]["figure"]


def wheel(folder, name: str) -> str:
    """A minimal pure-Python wheel holding package ``name`` (``FOUND = True``)."""
    path = folder / f"{name}-9.9-py3-none-any.whl"
    info = f"{name}-9.9.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}/__init__.py", "FOUND = True\n")
        whl.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return str(path)


@pytest.mark.slow
def test_wheels_travel_and_are_installed_before_the_steps(tmp_path):
    """--wheels DIR installs DIR/*.whl with pip --no-index into a folder ahead of PYTHONPATH: a package the
    machine lacks is then found by the steps (here a stand-in webdataset, shadowing the blocked one)."""
    folder = tmp_path / "whl"
    folder.mkdir()
    wheel(folder, "webdataset")
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": blocked(tmp_path / "blocked"), "PYTHON": sys.executable,
           "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--wheels", str(folder), "--dry-run", "--only", "device",
                           "--json", str(report)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    figure = json.loads(report.read_text())["steps"][0]["figure"]
    assert "missing: isal, faiss, wandb" in figure
    bad = subprocess.run(["bash", "bench/gpu_check.sh", "--wheels", str(tmp_path / "nowhere"), "--list"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--wheels needs a folder" in bad.stderr


def test_the_wheel_list_names_what_fdsl_imports_and_the_machine_lacks():
    with open(os.path.join(REPO, "bench/gpu_wheels.sh")) as handle:
        text = handle.read()
    pins = dict(line.split("==") for line in text.split("WHEELS=(")[1].split(")")[0].split())
    assert set(pins) == {"webdataset", "braceexpand", "isal"}
    from importlib.metadata import version

    assert pins["isal"] == version("isal")  # the PNGs' deflate backend: the same bytes on both machines
