"""fdsl as a library: `from fdsl import OnTheFlyDataset, BatchSource` in any training loop, and the README's
"Use as a library" example run verbatim."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fdsl
from fdsl import api
from fdsl.data import registry
from fdsl.errors import UserError
from tests.helpers import REPO


def readme_library_section() -> str:
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    return re.search(r"^## Use as a library\n(.*?)(?=^## )", text, flags=re.DOTALL | re.MULTILINE).group(1)


@pytest.mark.slow
def test_readme_example_runs_verbatim(one_thread):
    section = readme_library_section()
    assert len(section.strip().splitlines()) < 24  # with its heading, the section is under 25 lines
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md (Use as a library)", "exec"), namespace)  # noqa: S102 - the README's own code
    assert torch.isfinite(namespace["loss"]) and namespace["dataset"].epoch == 1
    images, labels = next(iter(namespace["source"]))
    assert images.shape == (20, 3, 32, 32) and labels.shape == (20,) and int(labels.max()) < 10


def test_import_fdsl_stays_light_and_names_the_public_api():
    probe = "import sys, fdsl; print('torch' in sys.modules, fdsl.__version__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": REPO}).stdout.split()
    assert out == ["False", fdsl.__version__]
    assert fdsl.OnTheFlyDataset is api.OnTheFlyDataset and fdsl.BatchSource is api.BatchSource
    assert set(fdsl.__all__) >= {"OnTheFlyDataset", "BatchSource", "AugmentSpec", "databases"}
    assert "fractaldb" in fdsl.databases() and "rcdb" in fdsl.databases()
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        fdsl.Nope  # noqa: B018
    for public in (api.OnTheFlyDataset, api.BatchSource, api.databases):
        assert public.__doc__ and len(public.__doc__) > 60


def test_items_are_the_databases_images_and_epochs_show_new_instances():
    ds = api.OnTheFlyDataset("rcdb", instances_per_class=2, num_classes=3, size=32, seed=5)
    db = registry.create("rcdb", classes=3, size=32, seed=5)
    assert len(ds) == 6 and isinstance(ds, torch.utils.data.Dataset)

    def rendered(cls, instance):
        array = np.asarray(next(iter(db.render(cls, db.class_params(cls), [instance]))))
        return np.asarray(Image.fromarray(array).convert("RGB"))

    image, label = ds[4]  # class 4 % 3, instance 4 // 3
    assert label == 1 and np.array_equal(np.asarray(image), rendered(1, 1))
    ds.set_epoch(3)  # instance 3 x 2 + 1
    assert np.array_equal(np.asarray(ds[4][0]), rendered(1, 7))


@pytest.mark.slow
def test_dataset_works_in_spawned_dataloader_workers():
    ds = api.OnTheFlyDataset("rcdb", instances_per_class=2, num_classes=2, size=16, transform=np.asarray)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    images, labels = next(iter(loader))
    assert labels.tolist() == [0, 1, 0, 1]
    assert torch.equal(images[1], torch.from_numpy(np.array(ds[1][0])))


def test_batch_source_is_a_pure_function_of_seed_epoch_rank_and_step():
    def source(**kw):
        return api.BatchSource("rcdb", 4, num_classes=3, instances_per_class=4, size=16, **kw)

    one, two = source(), source()
    assert len(one) == 3 and one.device == torch.device("cpu")
    first, labels = next(iter(one))
    again, same_labels = next(iter(two))
    assert first.shape == (4, 3, 16, 16) and torch.equal(first, again) and torch.equal(labels, same_labels)
    two.set_epoch(1)
    assert not torch.equal(next(iter(two))[1], labels) or not torch.equal(next(iter(two))[0], first)
    raw, _ = next(iter(source(augment=False)))
    assert raw.shape == (4, 1, 16, 16) and 0 <= float(raw.min()) and float(raw.max()) <= 1
    halves = [source(rank=r, world_size=2) for r in (0, 1)]
    assert len(halves[0]) == 1  # 12 images / 2 ranks / batch 4
    seen = [set(half.indices(0).tolist()) for half in halves]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 12


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(UserError, match="unknown database 'fractal'; choose one of: .*fractaldb"):
        api.OnTheFlyDataset("fractal")
    with pytest.raises(UserError, match=r"unknown option\(s\) \['iteration'\] for rcdb"):
        api.BatchSource("rcdb", 4, num_classes=2, size=16, iteration=5)
    db = registry.create("rcdb", classes=2, size=16)
    with pytest.raises(UserError, match="pass num_classes, size and options to fdsl.data.registry.create"):
        api.OnTheFlyDataset(db, num_classes=3)
    with pytest.raises(UserError, match="batch_size 8 is larger than the 4 images per epoch"):
        api.BatchSource(db, 8, instances_per_class=2)
