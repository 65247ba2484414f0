"""fdsl.gpucheck, the first command on a GPU: its steps, caps, time limits and its dry run on the CPU."""
import json
import os
import subprocess
import sys
import time

from test_engine_util import REPO

from fdsl import gpucheck

NAMES = ["device", "cuda-tests", "render", "train-deit-tiny", "train-deit-base", "fp16", "ddp", "kmeans", "ssl",
         "loader"]


def test_every_step_is_wired_in_priority_order_and_the_caps_fit_eight_minutes():
    assert [s.name for s in gpucheck.STEPS] == NAMES
    assert sum(s.cap_s for s in gpucheck.STEPS) <= gpucheck.BUDGET_S == 480
    for step in gpucheck.STEPS:
        gpu, dry = step.argv(False), step.argv(True)
        assert gpu[0] == dry[0] == sys.executable and "cuda" not in " ".join(dry).replace("-m cuda", "")
        if "--inner" in gpu:
            assert gpu[gpu.index("--inner") + 1] in gpucheck.INNER and "--dry-run" in dry
        elif gpu[1].endswith(".py"):
            assert os.path.exists(gpu[1]) and "cuda" in gpu
    render = gpucheck.STEPS[2].argv(False)
    assert render[1:] == [os.path.join(REPO, "bench/gpu_render.py"), "--device", "cuda", "--size", "256", "512"]


def test_figures_are_read_from_the_scripts_output():
    train = ("train step: bare timm loop    1000.0 img/s | fdsl engine     950.0 img/s | ratio 0.950\n"
             "engine step fed by it:     900.0 img/s | on random tensors     950.0 img/s | ratio 0.947 (target >= 0.9)")
    assert gpucheck.train_figure(train) == "engine 950 img/s = 0.950x bare timm; fed by device batches 900 img/s = 0.947x"
    assert gpucheck.pytest_summary("...\n==== 5 passed, 2 skipped in 3.1s ====\n") == "5 passed, 2 skipped in 3.1s"
    ssl = ("moco: bare 10.0 img/s (1 ms/step)  fdsl 9.5 img/s (1 ms/step)\nmoco: fdsl/bare 0.950x  (throughput)\n"
           "byol: bare 8.0 img/s (1 ms/step)  fdsl 7.6 img/s (1 ms/step)\nbyol: fdsl/bare 0.950x  (throughput)")
    assert gpucheck.ssl_figure(ssl) == "moco 9.5 img/s = 0.950x bare; byol 7.6 img/s = 0.950x bare"


def test_a_step_over_its_cap_is_killed_with_its_children_and_reported():
    sleeper = [sys.executable, "-c", ("import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('started', flush=True); "
               "time.sleep(60)")]
    step = gpucheck.Step("sleep", "sleeps", 2, lambda dry: sleeper)
    start = time.perf_counter()
    row = gpucheck.run_step(step, dry=False, remaining_s=100)
    assert time.perf_counter() - start < 15  # the grandchild holding the pipe was killed too
    assert row["result"] == "fail: over its 2s cap" and row["rc"] is None and row["tail"] == ["started"]
    assert gpucheck.run_step(step, dry=False, remaining_s=1)["result"] == "skipped: over the 8-minute budget"


def test_cuda_tests_are_selected_by_the_cuda_marker():
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           "tests/test_engine_options.py"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    selected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert selected == [f"tests/test_engine_options.py::test_cuda_amp[{d}]" for d in ("float16", "bfloat16")]


def test_dry_run_walks_the_steps_on_the_cpu_and_writes_the_report(tmp_path, capsys):
    """A subset of the steps (the whole dry run takes ~5 minutes on 2 shared cores); each runs its code path."""
    report = tmp_path / "report.json"
    assert gpucheck.main(["--dry-run", "--only", "ddp", "kmeans", "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["steps"]
    assert [(r["step"], r["result"]) for r in rows] == [("ddp", "pass"), ("kmeans", "pass")]
    assert "gloo group, all-reduce ok, DDP step" in rows[0]["figure"] and "SyncBN skipped: no CUDA" in rows[0]["figure"]
    assert "k=10: faiss" in rows[1]["figure"] and "; torch" in rows[1]["figure"]
    assert "| 1 | ddp |" in capsys.readouterr().out
