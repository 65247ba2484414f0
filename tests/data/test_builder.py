"""`fdsl render` for the 2D databases: layout, determinism, resume, shards, CSVs, bad input."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import webdataset as wds

from fdsl.data import builder, params_csv, registry
from tests.helpers import REPO, tree_hashes

SMALL = ["--size", 64, "--iterations", 20000, "--search-points", 20000, "--search-size", 128]


def read_png(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_fractaldb_layout_names_and_manifest(tmp_path, fdsl_cli):
    code, out, _ = fdsl_cli("render", "fractaldb", "--out", tmp_path, "--classes", 2, "--instances", 8, *SMALL,
                            "--no-progress")
    assert code == 0 and "wrote 16 images" in out
    names = sorted(os.listdir(tmp_path / "00001"))
    assert names[:4] == [f"00001_00_count_0_flip{f}.png" for f in range(4)]
    assert len(names) == 8 and (tmp_path / "param" / "00001.csv").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["database"] == "fractaldb" and manifest["options"]["seed"] == 0
    assert manifest["fdsl_version"]
    image = read_png(tmp_path / "00000" / "00000_00_count_0_flip0.png")
    assert image.shape == (64, 64) and set(np.unique(image)) <= {0, 127}
    flipped = read_png(tmp_path / "00000" / "00000_00_count_0_flip3.png")
    assert np.array_equal(flipped, image[::-1, ::-1])
    assert read_png(tmp_path / "00000" / "00000_01_count_0_flip0.png").tolist() != image.tolist()


def test_published_instance_flag_gives_rows_x_draws_x_flips():
    db = registry.create("fractaldb", classes=1, instance=10)
    assert db.num_instances == 1000 and db.draws_per_row == 10
    assert db.plan(0) == (0, 0, 0) and db.plan(41) == (1, 0, 1) and db.plan(999) == (24, 9, 3)


def test_same_bytes_with_one_or_two_workers(tmp_path, fdsl_cli):
    for workers in (1, 2):
        assert fdsl_cli("render", "fractaldb", "--out", tmp_path / f"w{workers}", "--classes", 4, "--instances", 8,
                        *SMALL, "--workers", workers, "--no-progress")[0] == 0
    one, two = tree_hashes(tmp_path / "w1"), tree_hashes(tmp_path / "w2")
    assert len(one) == 4 * 8 + 4 and one == two


def test_class_ranges_compose_to_the_whole(tmp_path, fdsl_cli):
    whole, split = tmp_path / "whole", tmp_path / "split"
    fdsl_cli("render", "onepfrac", "--out", whole, "--classes", 6, *SMALL[:4], "--no-progress")
    for part in ("0:2", "2:6"):
        fdsl_cli("render", "onepfrac", "--out", split, "--classes", 6, *SMALL[:4], "--class-range", part,
                 "--no-progress")
    assert tree_hashes(whole) == tree_hashes(split) and len(tree_hashes(whole)) == 12


def test_resume_completes_a_partial_class_without_duplicates(tmp_path, fdsl_cli):
    args = ["render", "fractaldb", "--out", tmp_path, "--classes", 3, "--instances", 8, *SMALL, "--no-progress"]
    fdsl_cli(*args)
    complete = tree_hashes(tmp_path)
    class_dir = tmp_path / "00001"
    for name in sorted(os.listdir(class_dir))[::2]:  # a class left with half its files
        os.remove(class_dir / name)
    (class_dir / ".00001_00_count_0_flip0.png.tmp123").write_bytes(b"half")  # and a half-written file
    code, out, _ = fdsl_cli(*args)
    assert code == 0 and "wrote 4 images, skipped 20" in out
    assert tree_hashes(tmp_path) == complete
    assert not [n for n in os.listdir(class_dir) if ".tmp" in n]


@pytest.mark.slow
def test_resume_after_a_killed_process(tmp_path):
    out = tmp_path / "db"
    cmd = [sys.executable, "-m", "fdsl", "render", "fractaldb", "--out", str(out), "--classes", "12",
           "--instances", "40", "--no-progress", *map(str, SMALL)]
    env = {**os.environ, "PYTHONPATH": REPO}
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "00001").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    reference = tmp_path / "ref"
    subprocess.run([*cmd[:6], str(reference), *cmd[7:]], env=env, check=True, capture_output=True)
    assert tree_hashes(out) == tree_hashes(reference)
    assert len(tree_hashes(out, (".png",))) == 12 * 40


def test_webdataset_shards_read_back_with_labels(tmp_path, fdsl_cli):
    shards, folders = tmp_path / "shards", tmp_path / "png"
    common = ["--classes", 3, "--instances", 5, *SMALL, "--no-progress"]
    assert fdsl_cli("render", "fractaldb", "--out", shards, "--format", "wds", "--shard-size", 4, *common)[0] == 0
    fdsl_cli("render", "fractaldb", "--out", folders, *common)
    names = sorted(n for n in os.listdir(shards) if n.endswith(".tar"))
    assert names == [f"SHARDS-{i:06d}.tar" for i in range(4)]  # 15 samples, 4 per shard
    url = str(shards / "SHARDS-{000000..000003}.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False).to_tuple("__key__", "png", "cls"))
    assert len(samples) == 15
    db = registry.create("fractaldb", classes=3, instances=5, size=64, iterations=20000, search_points=20000,
                         search_size=128)
    for index, (key, png, label) in enumerate(samples):
        cls, inst = divmod(index, 5)
        assert int(label) == cls and key == f"{cls:05d}_{inst:06d}"
        assert png == (folders / db.image_path(cls, inst)).read_bytes()
    again = tmp_path / "shards2"
    fdsl_cli("render", "fractaldb", "--out", again, "--format", "wds", "--shard-size", 4, "--workers", 2, *common)
    assert tree_hashes(again) == tree_hashes(shards)


def test_csv_round_trip_and_official_csv_folder(tmp_path, fdsl_cli):
    maps = np.random.default_rng(0).uniform(-1, 1, size=(3, 7))
    path = tmp_path / "x.csv"
    path.write_bytes(params_csv.format_rows(maps))
    assert np.array_equal(params_csv.read_rows(str(path), 7), maps)
    official = tmp_path / "csv"
    official.mkdir()
    # the official files: plain rows, fixed decimals, no header
    (official / "00000.csv").write_text("0.3,0.1,-0.2,0.45,0.1,-0.3,0.6\n-0.4,0.2,0.1,0.5,-0.2,0.4,0.4\n")
    (official / "00001.csv").write_text("0.5,0.0,0.0,0.5,0.0,0.0,0.3333\n0.5,0.0,0.0,0.5,0.5,0.0,0.3333\n"
                                        "0.5,0.0,0.0,0.5,0.25,0.5,0.3334\n")
    code, out, err = fdsl_cli("render", "fractaldb", "--out", tmp_path / "db", "--csv-dir", official,
                              "--instances", 4, *SMALL, "--no-progress")
    assert code == 0, err
    assert "wrote 8 images" in out
    sierpinski = read_png(tmp_path / "db" / "00001" / "00001_00_count_0_flip0.png")
    assert 0.05 < np.count_nonzero(sierpinski) / sierpinski.size < 0.6
    saved = params_csv.read_rows(str(tmp_path / "db" / "param" / "00001.csv"), 7)
    assert np.array_equal(saved, params_csv.read_rows(str(official / "00001.csv"), 7))


def test_onepfrac_classes_are_perturbations_above_the_pixel_threshold(tmp_path, fdsl_cli):
    fdsl_cli("render", "onepfrac", "--out", tmp_path, "--classes", 5, "--size", 128, "--no-progress")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    base = np.array(manifest["base_params"])
    for cls in range(5):
        params = params_csv.read_rows(str(tmp_path / "param" / f"{cls:05d}.csv"), 7)
        assert np.all(np.abs(params[:, :6] / base[:, :6] - 1) <= 0.1 + 1e-12)
        image = read_png(tmp_path / f"{cls:05d}" / f"{cls:05d}_0000.png")
        assert np.count_nonzero(image) / image.size >= 0.05


def test_ofdb_is_the_unweighted_fractaldb_category():
    kw = {"classes": 2, "size": 64, "iterations": 20000, "search_points": 20000, "search_size": 128}
    ofdb, fractal = registry.create("ofdb2d", **kw), registry.create("fractaldb", instances=12, **kw)
    params = fractal.class_params(1)
    assert np.array_equal(ofdb.class_params(1), params)
    identity_image = list(fractal.render(1, params, range(12)))[8]  # row 2 (identity), draw 0, flip 0
    assert fractal.plan(8) == (2, 0, 0)
    assert np.array_equal(next(ofdb.render(1, params, [0])), identity_image)


def test_preview_writes_a_contact_sheet(tmp_path, fdsl_cli):
    fdsl_cli("render", "fractaldb", "--out", tmp_path / "db", "--classes", 3, "--instances", 4, *SMALL,
             "--no-progress")
    code, _, _ = fdsl_cli("preview", tmp_path / "db", "--out", tmp_path / "grid.png", "--tile", 32)
    sheet = read_png(tmp_path / "grid.png")
    assert code == 0 and sheet.shape == (3 * 34 + 2, 4 * 34 + 2, 3)


@pytest.mark.parametrize("args, message", [
    (["fractaldb", "--csv-dir", "{tmp}/nope"], "does not exist"),
    (["fractaldb", "--csv-dir", "{tmp}/empty"], "holds no .csv files"),
    (["fractaldb", "--csv-dir", "{tmp}/bad"], "line 2"),
    (["fractaldb", "--size", "10"], "twice the padding"),
    (["fractaldb", "--classes", "0"], "--classes must be at least 1"),
    (["mandelbrot"], "unknown database"),
    (["fractaldb", "--classes", "5", "--class-range", "3:9"], "outside the 5 classes"),
    (["onepfrac", "--classes", "3"], "holds a 'fractaldb' database"),
    (["fractaldb", "--classes", "3", "--seed", "1"], "other settings"),
    (["onepfrac", "--sigma", "9"], "unreachable"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, fdsl_cli, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "00000.csv").write_text("0.1,0.2,0.3,0.4,0.5,0.6,1\n0.1,oops,0.3\n")
    existing = tmp_path / "out"
    existing.mkdir()
    plan = builder.BuildPlan(registry.create("fractaldb", classes=3), str(existing))
    (existing / "manifest.json").write_text(json.dumps(plan.manifest()))
    (existing / "keep.png").write_bytes(b"precious")
    argv = ["render", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--out", existing, "--no-progress"]
    code, _, err = fdsl_cli(*argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert (existing / "keep.png").read_bytes() == b"precious"


def test_python_dash_m_entry_point_reports_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fdsl", "render", "fractaldb", "--out", str(tmp_path),
                             "--classes", "0"], check=False, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                            text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "fdsl", "render", "fractaldb", "--help"], check=False,
                               env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True).stdout
    assert "--weight-interval" in help_text and "--class-range" in help_text


def test_png_modes(tmp_path):
    from fdsl.data import writers

    gray = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    rgb = cv2.imdecode(np.frombuffer(writers.encode_png(gray, "RGB"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (64, 64, 3) and np.array_equal(rgb[:, :, 1], gray)
    assert io.BytesIO(writers.encode_png(gray)).getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
