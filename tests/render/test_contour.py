"""RCDB and VisualAtom: the Perlin noise, what makes each database itself, and the build."""
import os
import tarfile

import numpy as np
import pytest

from fdsl.data import registry
from fdsl.errors import UserError
from fdsl.render import contour
from tests.helpers import tree_hashes

# the published renderer's pnoise1 draw: pnoise1 at u ~ U(0, 10000), measured over 200,000 draws
SPEC_PERCENTILES = {1: -0.827, 5: -0.579, 25: -0.152, 50: -0.002, 75: 0.144, 95: 0.616, 99: 0.857}


def test_perlin_matches_the_published_distribution():
    values = contour.perlin1d(np.random.default_rng(0).uniform(0, 10000, 200_000))
    assert values.min() == pytest.approx(-0.952, abs=0.003)
    assert values.max() == pytest.approx(0.952, abs=0.003)
    assert abs(values.mean()) < 0.005
    assert values.std() == pytest.approx(0.329, abs=0.004)
    for q, expected in SPEC_PERCENTILES.items():
        assert np.percentile(values, q) == pytest.approx(expected, abs=0.012), q


def test_perlin_is_zero_at_integers_and_smooth():
    assert np.allclose(contour.perlin1d(np.arange(-5.0, 300.0)), 0.0)
    x = np.linspace(10.0, 12.0, 2001)
    assert np.abs(np.diff(contour.perlin1d(x))).max() < 0.02  # continuous, not white noise


def shape(**changes):
    base = {"vertices": 360, "lines": 40, "perlin": 1.0, "line_width": 0.05, "radius": 60, "oval_x": 1.0,
            "oval_y": 1.0, "center_x": 256.0, "center_y": 256.0}
    return contour.ContourShape(**{**base, **changes})


def radii(points, cx=256.0, cy=256.0):
    return np.hypot(points[..., 0] - cx, points[..., 1] - cy)


def test_rcdb_contours_grow_outward_from_the_centre():
    grays, points = contour.contour_vertices(shape(), np.random.default_rng(1), 512, rcdb_noise=True)
    mean_radius = radii(points).mean(axis=1)
    assert points.shape == (40, 360, 2) and grays.shape == (40,)
    assert mean_radius[0] > 60 and np.all(np.diff(mean_radius) > 0)
    image = contour.render_contour(shape(), np.random.default_rng(1), 512, rcdb_noise=True, background=255)
    yy, xx = np.mgrid[:512, :512]
    assert np.all(image[np.hypot(xx - 256, yy - 256) < 50] == 255)  # the hole inside the first contour


def test_rcdb_images_are_gray_contours_on_white():
    db = registry.create("rcdb", classes=40)
    white, grays = [], set()
    for cls in range(40):
        image = next(db.render(cls, db.class_params(cls), [0]))
        assert image.shape == (512, 512) and image.dtype == np.uint8
        white.append(np.mean(image == 255))
        grays.update(np.unique(image[image < 255]).tolist())
    assert np.median(white) > 0.5  # white canvas
    assert len(grays) > 100  # many gray levels, not a binary drawing


def test_rcdb_class_and_instance_parameters():
    db = registry.create("rcdb", classes=300)
    params = [db.class_params(cls) for cls in range(300)]
    vertices = np.array([p["vertices"] for p in params])
    assert vertices.min() > 2 and vertices.max() <= 200 and 60 < vertices.mean() < 100
    assert all(1 <= p["lines"] <= 200 and 0 <= p["perlin"] < 4 and 0 <= p["line_width"] < 0.1 for p in params)
    # per instance radius, oval rates and centre are redrawn; V, L, P, w stay the class's
    ranges = db.ranges
    a = contour.rcdb_shape(params[0], db.rng(0, 0), ranges)
    b = contour.rcdb_shape(params[0], db.rng(0, 1), ranges)
    assert (a.vertices, a.lines, a.perlin, a.line_width) == (b.vertices, b.lines, b.perlin, b.line_width)
    assert (a.radius, a.oval_x, a.center_x) != (b.radius, b.oval_x, b.center_x)
    assert 0 <= a.radius <= 100 and 1 <= a.oval_x < 2 and 56 <= a.center_x <= 456


def angular_profile(image, bins=360):
    """Largest radius of a drawn pixel per angle bin, around the canvas centre."""
    rows, cols = np.nonzero(image)
    angle = np.arctan2(rows - 256, cols - 256)
    index = ((angle + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    profile = np.zeros(bins)
    np.maximum.at(profile, index, np.hypot(rows - 256, cols - 256))
    return profile


@pytest.mark.parametrize("frequency", [3, 5, 8])
def test_visualatom_wave_frequency_shows_as_n_fold_symmetry(frequency):
    atom = shape(vertices=720, lines=60, perlin=0.5, radius=30, waves=(frequency, 0))
    image = contour.render_contour(atom, np.random.default_rng(2), 512, rcdb_noise=False, background=0)
    spectrum = np.abs(np.fft.rfft(angular_profile(image)))
    assert int(np.argmax(spectrum[1:40])) + 1 == frequency
    assert np.mean(image == 0) > 0.5  # black canvas


def test_visualatom_images_and_parameters():
    db = registry.create("visualatom", classes=200)
    params = [db.class_params(cls) for cls in range(200)]
    for p in params:
        assert 200 <= p["vertices"] <= 1000 and 10 <= p["radius"] <= 60 and 0 <= p["perlin"] < 4
        assert 0 <= p["nami1"] <= 20 and 0 <= p["nami2"] <= 20
        assert p["nami1"] == 0 or p["nami1"] != p["nami2"]
    a, b = (contour.visualatom_shape(params[0], db.rng(0, i), db.ranges) for i in (0, 1))
    assert a.radius == b.radius and a.oval_x == b.oval_x and a.center_x != b.center_x  # only the centre moves
    corners = [next(db.render(cls, params[cls], [0]))[[0, 0, -1, -1], [0, -1, 0, -1]] for cls in range(20)]
    assert np.median(np.concatenate(corners)) == 0  # black background


def test_same_seed_same_bytes_other_seed_other_image():
    def image(seed, name="visualatom"):
        db = registry.create(name, classes=5, seed=seed, size=128)
        return next(db.render(3, db.class_params(3), [7]))

    assert image(1).tobytes() == image(1).tobytes()
    assert image(1).tobytes() != image(2).tobytes()
    assert image(1, "rcdb").tobytes() == image(1, "rcdb").tobytes()


def test_published_spellings_and_layouts():
    from fdsl.cli.render import build_parser

    cls = registry.get("visualatom")
    args = vars(build_parser(cls).parse_args(
        ["--out", "x", "--vertex_num", "500", "--perlin_min", "1", "--nami_1_max", "9", "--nami1-min", "2",
         "--line-num-max", "50", "--start_pos", "300", "--layout", "trainer"]))
    assert (args["vertex_num"], args["perlin_min"], args["nami_1_max"], args["nami_1_min"]) == (500, 1.0, 9, 2)
    assert (args["line_num_max"], args["start_pos"]) == (50, 300)
    published = registry.create("visualatom", classes=2)
    trainer = registry.create("visualatom", classes=2, layout="trainer", perlin_min=1.0)
    assert published.image_path(1, 2) == "00001/00001_0002.png"
    assert trainer.image_path(1, 2) == "image/00001/00001_0002.png"
    assert trainer.options["perlin_max"] == 5.0 and trainer.options["radius_max"] == 60
    assert registry.create("rcdb", classes=2).image_path(1, 2) == "image/00001/00001_0002.png"


@pytest.mark.parametrize("name, options, flag", [
    ("rcdb", {"perlin_min": 5.0}, "--perlin-min"),
    ("rcdb", {"vertex_num": 2}, "--vertex-num"),
    ("rcdb", {"line_num_min": 20, "line_num_max": 10}, "--line-num-min"),
    ("rcdb", {"size": -5}, "--size"),
    ("visualatom", {"radius_min": 70, "radius_max": 60}, "--radius-min"),
    ("visualatom", {"vertex_num_min": 2}, "--vertex-num-min"),
    ("visualatom", {"nami_2_min": 9, "nami_2_max": 3}, "--nami-2-min"),
    ("visualatom", {"oval_rate": 0.5}, "--oval-rate"),
])
def test_bad_input_is_one_user_error_naming_the_option(name, options, flag):
    with pytest.raises(UserError, match=flag):
        registry.create(name, **options)


def test_cli_bad_input_exits_2_with_one_line(fdsl_cli, tmp_path):
    code, _, err = fdsl_cli("render", "visualatom", "--out", tmp_path / "v", "--perlin_min", "6",
                            "--perlin_max", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--perlin-min" in err
    assert not (tmp_path / "v").exists()


def test_build_workers_resume_and_layout(fdsl_cli, tmp_path):
    common = ["--classes", 3, "--instances", 2, "--size", 64, "--no-progress"]
    assert fdsl_cli("render", "rcdb", "--out", tmp_path / "a", *common)[0] == 0
    assert fdsl_cli("render", "rcdb", "--out", tmp_path / "b", "--workers", 2, *common)[0] == 0
    first = tree_hashes(tmp_path / "a")
    assert len(first) == 6 + 3 and "param/00002.csv" in first and "image/00001/00001_0001.png" in first
    assert first == tree_hashes(tmp_path / "b")
    os.remove(tmp_path / "a" / "image" / "00001" / "00001_0000.png")
    code, out, _ = fdsl_cli("render", "rcdb", "--out", tmp_path / "a", *common)
    assert code == 0 and "wrote 1 images, skipped 5" in out
    assert tree_hashes(tmp_path / "a") == first

    assert fdsl_cli("render", "visualatom", "--out", tmp_path / "v", *common)[0] == 0
    assert sorted(tree_hashes(tmp_path / "v"))[:2] == ["00000/00000_0000.png", "00000/00000_0001.png"]
    assert fdsl_cli("render", "visualatom", "--out", tmp_path / "t", "--layout", "trainer", *common)[0] == 0
    trainer = tree_hashes(tmp_path / "t")
    assert "image/00002/00002_0001.png" in trainer and "param/00002.csv" in trainer


def test_shards_match_png_folders(fdsl_cli, tmp_path):
    common = ["--classes", 3, "--instances", 2, "--size", 64, "--no-progress"]
    assert fdsl_cli("render", "visualatom", "--out", tmp_path / "p", *common)[0] == 0
    for out, workers in (("s1", 1), ("s2", 2)):
        assert fdsl_cli("render", "visualatom", "--out", tmp_path / out, "--format", "wds",
                        "--shard-size", 4, "--workers", workers, *common)[0] == 0
    assert tree_hashes(tmp_path / "s1") == tree_hashes(tmp_path / "s2")
    with tarfile.open(tmp_path / "s1" / "SHARDS-000000.tar") as tar:
        png = tar.extractfile("00001_000001.png").read()
    assert png == (tmp_path / "p" / "00001" / "00001_0001.png").read_bytes()


@pytest.mark.parametrize("name", ["rcdb", "visualatom", "exfractaldb", "mvfractaldb", "ofdb3d"])
def test_help_lists_every_option_with_its_default(name, fdsl_cli):
    from fdsl.cli.render import build_parser

    parser = build_parser(registry.get(name))
    text = parser.format_help()
    own = [a for a in parser._actions if a.dest in registry.get(name).defaults()
           and a.dest not in ("classes", "instances", "size", "seed")]
    assert own and all("default" in a.help for a in own), [a.dest for a in own if "default" not in a.help]
    assert all(a.option_strings[0] in text for a in own)


def test_rcdb_vertex_count_is_the_truncated_exponential():
    rng = np.random.default_rng(5)
    counts = np.array([contour._truncated_exponential_count(rng, 100.0, 200) for _ in range(50_000)])
    assert counts.min() == 3 and counts.max() == 200
    # int(Exponential(100)) conditioned on 2 < V <= 200: mean 70.7, median 59
    assert counts.mean() == pytest.approx(70.7, abs=0.8) and np.median(counts) == pytest.approx(59, abs=2)
    assert contour._truncated_exponential_count(rng, 1e6, 3) == 3
