"""--param-dir: a database fdsl built re-renders byte for byte from its param/ folder alone (also under
another --seed), and a bad parameter file is one error line naming the file, line and field."""
import json
import os
import shutil

import pytest

BUILDS = {  # tiny builds, each with a non-default seed and an option its per-image draws use
    "rcdb": ["--seed", 3, "--start-pos", 100, "--radius-max", 40],
    "visualatom": ["--seed", 3, "--start-pos", 200, "--layout", "trainer"],
    "exfractaldb": ["--seed", 3, "--views", 2, "--points", 300],
    "mvfractaldb": ["--seed", 3, "--views", 3, "--points", 300, "--jitter", 10],
}
COMMON = ["--classes", 3, "--instances", 4, "--size", 40, "--no-progress"]


def files(root) -> dict:
    """{relative path: bytes} of every file under root."""
    out = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{database: the root of its tiny build}, built once for the module."""
    from fdsl.cli.main import main

    roots = {}
    for name, extra in BUILDS.items():
        root = tmp_path_factory.mktemp(name) / "db"
        assert main(["render", name, "--out", str(root), *map(str, COMMON + extra)]) == 0
        roots[name] = root
    return roots


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_param_dir_rerenders_every_byte(name, built, tmp_path, fdsl_cli):
    original = built[name]
    layout = ["--layout", "trainer"] if name == "visualatom" else []
    code, _, err = fdsl_cli("render", name, "--out", tmp_path / "again", "--param-dir", original / "param",
                            "--seed", 11, *layout, "--no-progress")
    assert code == 0
    assert "--seed 3 from" in err  # the recorded seed wins, and the user is told so
    first, again = files(original), files(tmp_path / "again")
    assert sorted(first) == sorted(again)
    assert sum(path.endswith(".png") for path in first) == 3 * 4
    assert [path for path in first if first[path] != again[path]] == ["manifest.json"]
    before, after = (json.loads(tree["manifest.json"]) for tree in (first, again))
    assert after["options"].pop("param_dir") == str(original / "param")
    assert before == after  # seed, size, classes, instances and the per-image options all recorded


def test_the_database_root_and_fewer_classes_also_work(built, tmp_path, fdsl_cli):
    original = built["rcdb"]
    code, _, _ = fdsl_cli("render", "rcdb", "--out", tmp_path / "two", "--param-dir", original,
                          "--classes", 2, "--no-progress")
    assert code == 0
    again = files(tmp_path / "two")
    first = files(original)
    images = [path for path in again if path.endswith(".png")]
    assert len(images) == 2 * 4 and all(again[path] == first[path] for path in images)
    assert json.loads(again["param/render.json"])["classes"] == 2


def test_without_the_param_dir_another_seed_gives_other_images(built, tmp_path, fdsl_cli):
    """The check above can fail: the per-image draws do depend on the seed."""
    code, _, _ = fdsl_cli("render", "rcdb", "--out", tmp_path / "other", *COMMON, *BUILDS["rcdb"][2:],
                          "--seed", 11)
    assert code == 0
    first, other = files(built["rcdb"]), files(tmp_path / "other")
    assert first["image/00000/00000_0000.png"] != other["image/00000/00000_0000.png"]


def corrupt_contour(param, text):
    (param / "00001.csv").write_text(text)


def corrupt_ifs3d(param, text):
    (param / "00001.csv").write_text(text)


ROW = "0.5,0.1,0.2,0.1,0.5,0.1,0.0,0.2,0.5,0.1,0.1,0.1,"  # 12 numbers and a comma: the probability follows


@pytest.mark.parametrize("name, change, message", [
    ("rcdb", lambda p: os.remove(p / "00001.csv"), "00001.csv is missing"),
    ("rcdb", lambda p: os.remove(p / "render.json"), "render.json is missing"),
    ("rcdb", lambda p: (p / "render.json").write_text("{"), "is not fdsl's render record"),
    ("rcdb", lambda p: corrupt_contour(p, "vertices,lines,perlin,line_width\n10,5,1.5\n"), "line 2: 3 values"),
    ("rcdb", lambda p: corrupt_contour(p, "vertices,lines,line_width\n10,5,0.1\n"), "line 1: no field 'perlin'"),
    ("rcdb", lambda p: corrupt_contour(p, "vertices,lines,perlin,line_width\n10,5,abc,0.1\n"),
     "00001.csv line 2, field 'perlin': 'abc' is not a finite number"),
    ("rcdb", lambda p: corrupt_contour(p, "vertices,lines,perlin,line_width\n10.5,5,1,0.1\n"),
     "field 'vertices': '10.5' is not a whole number"),
    ("visualatom", lambda p: corrupt_contour(p, "vertices\n2\n"), "no field 'lines'"),
    ("exfractaldb", lambda p: corrupt_ifs3d(p, ROW + "0.5\n" + ROW + "x\n"), "00001.csv line 2, field 13: 'x'"),
    ("exfractaldb", lambda p: corrupt_ifs3d(p, ROW + "0.5\n" + ROW[:-5] + "\n"), "line 2: expected 13"),
    ("mvfractaldb", lambda p: corrupt_ifs3d(p, ROW + "-1\n"), "field 13 (the map probabilities)"),
])
def test_a_bad_parameter_file_is_one_line_naming_it(name, change, message, built, tmp_path, fdsl_cli):
    param = tmp_path / "param"
    shutil.copytree(built[name] / "param", param)
    change(param)
    code, _, err = fdsl_cli("render", name, "--out", tmp_path / "out", "--param-dir", param, "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("args, message", [
    (["rcdb", "--classes", 5], "--classes 5 but"),
    (["visualatom"], "records a 'rcdb' database, not 'visualatom'"),
])
def test_wrong_class_count_or_database(args, message, built, tmp_path, fdsl_cli):
    code, _, err = fdsl_cli("render", *args, "--out", tmp_path / "out", "--param-dir", built["rcdb"] / "param")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_missing_folder_and_published_visualatom_layout(tmp_path, fdsl_cli):
    code, _, err = fdsl_cli("render", "rcdb", "--out", tmp_path / "out", "--param-dir", tmp_path / "nope")
    assert code == 2 and "--param-dir" in err and "does not exist" in err
    code, _, _ = fdsl_cli("render", "visualatom", "--out", tmp_path / "v", "--classes", 1, "--instances", 1,
                          "--size", 32, "--no-progress")
    assert code == 0 and not (tmp_path / "v" / "param").exists()  # the published layout has no param/ folder
    code, _, err = fdsl_cli("render", "visualatom", "--out", tmp_path / "out", "--param-dir", tmp_path / "v")
    assert code == 2 and "render.json is missing" in err and "--layout trainer" in err
