"""Worker processes start with fork on Linux and spawn elsewhere (FDSL_START_METHOD overrides): a build's bytes
do not depend on the method, and the shared image cache, which needs fork, steps aside under spawn."""
import numpy as np
import pytest
from PIL import Image

from fdsl.data import builder, cache, registry, start_method
from fdsl.errors import UserError
from tests.helpers import tree_hashes


def test_fork_on_linux_spawn_elsewhere_and_the_variable_overrides(monkeypatch):
    monkeypatch.delenv(start_method.ENV, raising=False)
    monkeypatch.setattr(start_method.sys, "platform", "linux")
    assert start_method.name() == "fork" and start_method.forks()
    for platform in ("darwin", "win32"):
        monkeypatch.setattr(start_method.sys, "platform", platform)
        assert start_method.name() == "spawn" and not start_method.forks()
    monkeypatch.setattr(start_method.sys, "platform", "linux")
    monkeypatch.setenv(start_method.ENV, " Fork ")
    assert start_method.name() == "fork"
    monkeypatch.setenv(start_method.ENV, "vfork")
    with pytest.raises(UserError, match=r"FDSL_START_METHOD=vfork: .*spawn.*unset FDSL_START_METHOD"):
        start_method.name()


def build_with(method: str, out, monkeypatch) -> list[str]:
    """A two-worker build under ``method``; returns the start methods the builder's pools used."""
    monkeypatch.setenv(start_method.ENV, method)
    used = []

    def spy():
        context = start_method.multiprocessing.get_context(start_method.name())
        used.append(context.get_start_method())
        return context

    monkeypatch.setattr(start_method, "context", spy)
    db = registry.create("rcdb", classes=4, instances=2, size=32, seed=3)
    result = builder.build(builder.BuildPlan(db, str(out)), workers=2, progress=False)
    assert result["written"] == 8
    return used


def test_a_spawned_build_writes_the_bytes_of_a_forked_one(tmp_path, monkeypatch):
    assert build_with("fork", tmp_path / "fork", monkeypatch) == ["fork"]
    assert build_with("spawn", tmp_path / "spawn", monkeypatch) == ["spawn"]
    forked, spawned = tree_hashes(tmp_path / "fork"), tree_hashes(tmp_path / "spawn")
    assert len(forked) == 8 + 4 and spawned == forked  # 8 PNGs and the 4 classes' parameter CSVs


def test_the_image_cache_needs_fork(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(paths[-1])
    monkeypatch.setenv(start_method.ENV, "spawn")
    assert cache.for_folder(paths, "auto", log=lambda line: None) is None
    with pytest.raises(UserError, match="--cache-images on .* spawn here; drop --cache-images"):
        cache.for_folder(paths, "on")
    monkeypatch.setenv(start_method.ENV, "fork")
    cached = cache.for_folder(paths, "on", workers=2, log=lambda line: None)
    assert [int(cached.get(i)[0, 0]) for i in range(3)] == [0, 40, 80]


def test_dataloader_workers_and_their_shared_counters_use_the_start_method(tmp_path, monkeypatch):
    from fdsl.cli.args import parse
    from fdsl.engine.data import build_train_source
    from fdsl.engine.distributed import DistInfo
    from fdsl.recipes.supervised import data_spec
    from tests.helpers.runs import make_folder

    folder = make_folder(tmp_path, classes=2, per_class=4)
    monkeypatch.setenv(start_method.ENV, "spawn")
    args = parse("pretrain", [folder, "-j", "1", "-b", "2"])
    spec = data_spec(args)
    data = build_train_source(spec, DistInfo())
    assert data.dataset.cache is None  # auto: the cache needs fork
    loader = data.loader(spec, DistInfo())
    assert loader.loader.multiprocessing_context.get_start_method() == "spawn"
    bad_files = data.dataset.bad_files  # counted by the workers: its lock must pass to a spawned process
    child = start_method.context().Process(target=type(bad_files).add, args=(bad_files, "broken.png"))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and bad_files.take() == (1, "broken.png")
