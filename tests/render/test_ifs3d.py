"""3D IFS: category search, the 145 instances, normalisation, the software camera and the build."""
import numpy as np
import pytest

from fdsl.data import registry
from fdsl.errors import UserError
from fdsl.render import ifs3d
from tests.helpers import tree_hashes


@pytest.fixture(scope="module")
def system():
    return ifs3d.search_system(np.random.default_rng(7))


def test_search_accepts_by_per_axis_variance(system):
    assert system.shape[1] == 13 and 2 <= len(system) <= 7
    assert system[:, 12].sum() == pytest.approx(1.0)
    dets = np.abs(np.linalg.det(system[:, :9].reshape(-1, 3, 3)))
    assert np.allclose(system[:, 12], dets / dets.sum())
    cloud = ifs3d.normalise(ifs3d.chaos_game(system, np.random.default_rng(0)))
    assert np.all(cloud.var(axis=0) > 0.05)
    again = ifs3d.search_system(np.random.default_rng(7))
    assert np.array_equal(system, again)


def test_degenerate_systems_are_rejected():
    exploding = ifs3d.with_probabilities(np.tile(np.r_[3.0, 0, 0, 0, 3.0, 0, 0, 0, 3.0, 1, 1, 1], (2, 1)))
    points = ifs3d.chaos_game(exploding, np.random.default_rng(0))
    assert not np.isfinite(points).all()
    assert ifs3d.normalise(points) is None and not ifs3d.accepts(ifs3d.normalise(points), 0.05)
    collapsed = np.zeros((10, 3))
    assert ifs3d.normalise(collapsed) is None
    for seed in range(10):  # every searched class gives finite clouds for all 145 instances
        found = ifs3d.search_system(np.random.default_rng(seed))
        for index in (0, 1, 72, 144):
            assert np.isfinite(ifs3d.instance_cloud(found, index, np.random.default_rng(index))).all()


def test_145_instances_from_parameter_scalings(system):
    assert ifs3d.INSTANCES_PER_CLASS == 145
    assert np.array_equal(ifs3d.instance_system(system, 0), system)
    variants = {ifs3d.instance_system(system, i).tobytes() for i in range(145)}
    assert len(variants) == 145
    # instance 1 + 12 * param + k scales parameter `param` of every map by FACTORS[k]
    scaled = ifs3d.instance_system(system, 1 + 12 * 4 + 11)
    assert np.allclose(scaled[:, 4], system[:, 4] * 1.6)
    assert np.array_equal(np.delete(scaled, 4, axis=1), np.delete(system, 4, axis=1))
    with pytest.raises(ValueError):
        ifs3d.instance_system(system, 145)


def test_clouds_are_normalised_and_centred(system):
    cloud = ifs3d.instance_cloud(system, 30, np.random.default_rng(3))
    assert cloud.shape == (10_000, 3) and np.isfinite(cloud).all()
    assert np.allclose(cloud.mean(axis=0), 0.0, atol=1e-9)
    raw = ifs3d.chaos_game(ifs3d.instance_system(system, 30), np.random.default_rng(3))
    joint = (raw - raw.min()) / (raw.max() - raw.min()) * 2 - 1  # one scale for all axes: shape kept
    assert np.allclose(cloud, joint - joint.mean(axis=0))
    assert np.all(cloud.max(axis=0) - cloud.min(axis=0) <= 2.0 + 1e-9)


def test_camera_projects_the_origin_to_the_centre():
    point = np.zeros((1, 3))
    for eye in (ifs3d.eye_position(0.3, 0.2), ifs3d.eye_position(2.0, -1.2), ifs3d.eye_position(0, np.pi / 2)):
        image = ifs3d.render_view(point, eye, 224)
        (row, col), = np.argwhere(image)  # the centre lies on a pixel corner: either side is fine
        assert row in (111, 112) and col in (111, 112)
    # 45 degree FOV at distance 4: a point at height 4 tan(22.5 deg) sits on the top edge
    edge = 4 * np.tan(np.radians(22.5))
    image = ifs3d.render_view(np.array([[0.0, edge * 0.99, 0.0]]), ifs3d.eye_position(0, 0), 224)
    assert np.argwhere(image)[0, 0] <= 1
    behind = ifs3d.render_view(np.array([[0.0, 0.0, 4.5]]), ifs3d.eye_position(0, 0), 224)
    assert behind.sum() == 0


def test_exfractaldb_views_differ_and_are_white_points_on_black():
    db = registry.create("exfractaldb", classes=2, instances=14)
    params = db.class_params(1)
    images = list(db.render(1, params, range(14)))
    assert all(i.shape == (224, 224) and i.dtype == np.uint8 for i in images)
    assert all(set(np.unique(i).tolist()) == {0, 255} for i in images)
    filled = [np.mean(i > 0) for i in images]
    assert min(filled) > 0.002 and max(filled) < 0.5  # non-empty, mostly black
    assert len({i.tobytes() for i in images[:7]}) == 7  # 7 random views of cloud 0 all differ
    again = list(db.render(1, params, [9, 3]))  # any subset, any order: same images
    assert again[0].tobytes() == images[9].tobytes() and again[1].tobytes() == images[3].tobytes()


def test_mvfractaldb_has_twelve_fixed_views():
    db = registry.create("mvfractaldb", classes=1, size=96)
    assert db.num_instances == 12 * 145
    eyes = np.array([db.eye(0, i) for i in range(24)])
    azimuths = np.degrees(np.arctan2(eyes[:, 0], eyes[:, 2])) % 360
    elevations = np.degrees(np.arcsin(eyes[:, 1] / 4))
    expected = (np.arange(24) % 12) * 30.0
    assert np.all(np.abs((azimuths - expected + 180) % 360 - 180) <= 3.0 + 1e-9)
    assert np.all(np.abs(elevations - 30) <= 3.0 + 1e-9)


def test_bad_input():
    with pytest.raises(UserError, match="--views"):
        registry.create("exfractaldb", views=0)
    with pytest.raises(UserError, match="--instances"):
        registry.create("exfractaldb", instances=2000)
    with pytest.raises(UserError, match="--point-instances"):
        registry.create("mvfractaldb", point_instances=200)
    with pytest.raises(UserError, match="--size"):
        registry.create("ofdb3d", size=-1)


def test_build_ply_workers_and_shards(fdsl_cli, tmp_path):
    common = ["--classes", 2, "--instances", 3, "--views", 2, "--size", 48, "--no-progress"]
    assert fdsl_cli("render", "exfractaldb", "--out", tmp_path / "a", "--save-ply", *common)[0] == 0
    assert fdsl_cli("render", "exfractaldb", "--out", tmp_path / "b", "--save-ply", "--workers", 2, *common)[0] == 0
    first = tree_hashes(tmp_path / "a", (".png", ".csv", ".ply"))
    assert first == tree_hashes(tmp_path / "b", (".png", ".csv", ".ply"))
    assert {"image/00001/00001_0002.png", "param/00001.csv", "ply/00001/00001_0001.ply"} <= set(first)
    assert len([p for p in first if p.endswith(".ply")]) == 4  # ceil(3 images / 2 views) clouds x 2
    data = (tmp_path / "a" / "ply" / "00000" / "00000_0000.ply").read_bytes()
    header, body = data.split(b"end_header\n")
    assert b"element vertex 10000" in header
    db = registry.create("exfractaldb", classes=2, instances=3, views=2, size=48)
    cloud = np.frombuffer(body, "<f4").reshape(-1, 3)
    assert np.allclose(cloud, db.cloud(0, db.class_params(0), 0), atol=1e-6)

    for out, workers in (("s1", 1), ("s2", 2)):
        assert fdsl_cli("render", "ofdb3d", "--out", tmp_path / out, "--format", "wds", "--classes", 3,
                        "--size", 48, "--workers", workers, "--no-progress")[0] == 0
    assert tree_hashes(tmp_path / "s1") == tree_hashes(tmp_path / "s2")
    code, _, err = fdsl_cli("render", "mvfractaldb", "--out", tmp_path / "m", "--views", 0)
    assert code == 2 and "--views" in err and len(err.strip().splitlines()) == 1


def test_a_search_that_finds_nothing_is_one_user_error(monkeypatch):
    with pytest.raises(ifs3d.SearchFailed):
        ifs3d.search_system(np.random.default_rng(0), variance=0.99, max_tries=20)

    search = ifs3d.search_system

    def hopeless(rng, variance, points):
        return search(rng, variance, points, max_tries=5)

    monkeypatch.setattr(ifs3d, "search_system", hopeless)
    with pytest.raises(UserError, match="--variance"):
        registry.create("exfractaldb", variance=0.99).class_params(0)


def test_on_the_fly_instances_wrap_around_the_finite_set():
    from fdsl.data import registry
    from fdsl.data.onthefly import OnTheFlyDataset

    ds = OnTheFlyDataset(registry.create("ofdb3d", classes=2, size=32, seed=0), instances_per_class=200)
    first, wrapped = ds[0], ds[2 * ds.db.num_instances]  # class 0, instance 0 and instance num_instances
    assert np.array_equal(np.asarray(first[0]), np.asarray(wrapped[0])) and first[1] == wrapped[1] == 0
