"""`fdsl data prepare`: tiny idx and CIFAR files made here are written as image folders (or shards) whose pixels
round-trip exactly; the seeded subsets; one-line errors that leave nothing behind; re-runs; fine-tuning reads it."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fdsl.data.images import read_image
from fdsl.data.shards import read_local_tar
from tests.helpers.runs import TINY_VIT, read_summary

DEBIAN_FASHION = "/usr/share/datasets/fashion-mnist"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# -- tiny source files -------------------------------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_idx(folder, per_class=(6, 3), size=(7, 5), gz=True, seed=0):
    """The four MNIST idx files: per_class (train, test) images of each of 10 digits, H x W = size, shuffled."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    data = {}
    for prefix, count in zip(("train", "t10k"), per_class):
        labels = rng.permutation(np.repeat(np.arange(10), count)).astype(np.uint8)
        images = rng.integers(0, 256, (len(labels), *size), dtype=np.uint8)
        data[prefix] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = os.path.join(str(folder), f"{prefix}-{kind}-ubyte" + (".gz" if gz else ""))
            with (gzip.open if gz else open)(path, "wb") as handle:
                handle.write(idx_bytes(array))
    return data


def make_cifar(path, name="cifar10", per_class=(4, 2), seed=0):
    """A cifar-10/100-python.tar.gz in the published layout with per_class (train, test) images per class."""
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    splits = {}
    for split, count in zip(("train", "test"), per_class):
        fine = rng.permutation(np.repeat(np.arange(classes), count))
        data = rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        splits[split] = (data, fine)
    if name == "cifar10":
        parts = zip(np.array_split(splits["train"][0], 5), np.array_split(splits["train"][1], 5))
        members = {f"data_batch_{i + 1}": {"data": data, "labels": labels.tolist()}
                   for i, (data, labels) in enumerate(parts)}
        members["test_batch"] = {"data": splits["test"][0], "labels": splits["test"][1].tolist()}
        members["batches.meta"] = {"label_names": CIFAR10_NAMES}
    else:
        members = {split: {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}
                   for split, (data, fine) in splits.items()}  # bytes keys, as Python 2 pickles load
        members["meta"] = {"fine_label_names": [f"fine{i}" for i in range(100)],
                           "coarse_label_names": [f"Coarse {i}" for i in range(20)]}
    with tarfile.open(path, "w:gz") as tar:
        for member, content in members.items():
            blob = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return {split: (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels) for split, (data, labels) in
            splits.items()}


def written(root):
    """{(class folder, source index): path} of the images under root."""
    out = {}
    for folder in sorted(os.listdir(root)):
        for name in os.listdir(os.path.join(root, folder)):
            out[(folder, int(name.split(".")[0]))] = os.path.join(root, folder, name)
    return out


def error_line(result):
    code, out, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("fdsl data: error: "), (code, out, err)
    return err


# -- round trips -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_idx_pixels_round_trip(tmp_path, fdsl_cli, gz):
    data = make_idx(tmp_path / "src", gz=gz)
    out = tmp_path / "mnist"
    code, stdout, _ = fdsl_cli("data", "prepare", "mnist", "--from", tmp_path / "src", "--out", out)
    assert code == 0 and "train 60 / test 30 images, 10 classes" in stdout
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = data[prefix]
        files = written(out / split)
        assert len(files) == len(labels) and sorted(os.listdir(out / split)) == [str(d) for d in range(10)]
        for (folder, index), path in files.items():
            assert int(folder) == labels[index]
            np.testing.assert_array_equal(read_image(path), images[index])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 60, "test": 30} and manifest["counts_per_class"]["test"] == [3] * 10
    assert (out / "classes.txt").read_text().split() == [str(d) for d in range(10)]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no temporary folder left


def test_fashion_mnist_folders_keep_label_order(tmp_path, fdsl_cli):
    from fdsl.data.folder import scan

    make_idx(tmp_path / "src", per_class=(2, 1))
    out = tmp_path / "fm"
    assert fdsl_cli("data", "prepare", "fashion-mnist", "--from", tmp_path / "src", "--out", out)[0] == 0
    folders = (out / "classes.txt").read_text().split()
    assert folders[0] == "0_t-shirt_top" and folders[9] == "9_ankle_boot"
    assert scan(str(out / "train"))[1] == folders == sorted(folders)  # fdsl's natural sort and a plain sort agree


@pytest.mark.parametrize("name, labels", [("cifar10", None), ("cifar100", "fine"), ("cifar100", "coarse")])
def test_cifar_pixels_round_trip(tmp_path, fdsl_cli, name, labels):
    archive = tmp_path / f"{name}.tar.gz"
    data = make_cifar(archive, name, per_class=(2, 1) if name == "cifar100" else (4, 2))
    out = tmp_path / "out"
    extra = ["--labels", labels] if labels else []
    assert fdsl_cli("data", "prepare", name, "--from", archive, "--out", out, *extra)[0] == 0
    folders = (out / "classes.txt").read_text().split()
    expected = {None: "3_cat", "fine": "07_fine7", "coarse": "07_coarse_7"}[labels]
    assert expected in folders and len(folders) == (20 if labels == "coarse" else len(set(data["train"][1])))
    for split in ("train", "test"):
        images, fine = data[split]
        files = written(out / split)
        assert len(files) == len(fine)
        for (folder, index), path in files.items():
            assert folders.index(folder) == (fine[index] // 5 if labels == "coarse" else fine[index])
            np.testing.assert_array_equal(read_image(path), images[index])  # R, G, B planes -> H x W x 3


def test_folder_source_copies_files(tmp_path, fdsl_cli):
    from tests.helpers.runs import make_folder

    src = make_folder(tmp_path / "src", classes=3, per_class=4, splits=("train", "val"))
    out = tmp_path / "out"
    assert fdsl_cli("data", "prepare", "folder", "--from", src, "--out", out, "--per-class", 2)[0] == 0
    assert sorted(os.listdir(out)) == ["classes.txt", "manifest.json", "test", "train"]  # val/ was the test split
    assert (out / "classes.txt").read_text().split() == ["00000", "00001", "00002"]
    copied = {(folder, Path(path).read_bytes()) for (folder, _), path in written(out / "test").items()}
    originals = {(path.parent.name, path.read_bytes()) for path in Path(src, "val").glob("*/*.png")}
    assert len(copied) == len(originals) == 12 and copied == originals
    assert len(written(out / "train")) == 6


# -- subsets -----------------------------------------------------------------------------------------------------
def prepared(tmp_path, fdsl_cli, name, *options):
    out = tmp_path / name
    assert fdsl_cli("data", "prepare", "mnist", "--from", tmp_path / "src", "--out", out, *options)[0] == 0
    return {split: set(written(out / split)) for split in ("train", "val") if (out / split).is_dir()}


def test_subset_fixed_by_seed_nested_and_disjoint_from_val(tmp_path, fdsl_cli):
    make_idx(tmp_path / "src", per_class=(20, 1))
    a = prepared(tmp_path, fdsl_cli, "a", "--per-class", 5, "--val-from-train", 3)
    again = prepared(tmp_path, fdsl_cli, "again", "--per-class", 5, "--val-from-train", 3)
    other_seed = prepared(tmp_path, fdsl_cli, "seed1", "--per-class", 5, "--val-from-train", 3, "--seed", 1)
    more = prepared(tmp_path, fdsl_cli, "more", "--per-class", 10, "--val-from-train", 3)
    rest = prepared(tmp_path, fdsl_cli, "rest", "--val-from-train", 3)
    assert a == again and a != other_seed
    assert len(a["train"]) == 50 and len(a["val"]) == 30 and not a["train"] & a["val"]
    for folder in map(str, range(10)):
        assert sum(f == folder for f, _ in a["train"]) == 5 and sum(f == folder for f, _ in a["val"]) == 3
    assert a["val"] == more["val"] == rest["val"]  # val does not depend on --per-class
    assert a["train"] < more["train"] < rest["train"] and len(rest["train"]) == 170  # nested subsets


# -- webdataset shards -------------------------------------------------------------------------------------------
def test_wds_shards_hold_every_image(tmp_path, fdsl_cli):
    data = make_idx(tmp_path / "src")
    out = tmp_path / "wds"
    code, stdout, _ = fdsl_cli("data", "prepare", "mnist", "--from", tmp_path / "src", "--out", out, "--format", "wds",
                               "--shard-size", 25, "--val-from-train", 1)
    assert code == 0 and "--trainshards" in stdout and "--dataset_size 50" in stdout
    assert sorted(os.listdir(out / "train")) == [f"SHARDS-00000{i}.tar" for i in range(2)]
    images, labels = data["train"]
    seen = []
    for shard in sorted(os.listdir(out / "train")):
        for sample in read_local_tar(str(out / "train" / shard)):
            index = int(sample["__key__"].split("_")[1])
            assert int(sample["cls"]) == labels[index]
            np.testing.assert_array_equal(read_image_bytes(sample["png"]), images[index])
            seen.append(index)
    assert len(seen) == len(set(seen)) == 50 and seen != sorted(seen)  # shuffled training order
    assert json.loads((out / "manifest.json").read_text())["shards"] == {"train": 2, "val": 1, "test": 2}


def read_image_bytes(data: bytes) -> np.ndarray:
    from fdsl.data import png

    return png.decode(data)


# -- bad input, re-runs ------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, fdsl_cli):
    src = tmp_path / "src"
    make_idx(src, gz=True)
    out = tmp_path / "out"

    def fails(name, *options, source=src):
        err = error_line(fdsl_cli("data", "prepare", name, "--from", source, "--out", out, *options))
        assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".")]
        return err

    assert "unknown data set 'svhn'" in fails("svhn")
    assert "class 0 has 6 training images; --per-class 5 + --val-from-train 2 needs 7" in \
        fails("mnist", "--per-class", 5, "--val-from-train", 2)
    assert "--labels is for cifar100" in fails("mnist", "--labels", "coarse")
    images = src / "train-images-idx3-ubyte.gz"
    whole = images.read_bytes()
    images.write_bytes(whole[:len(whole) // 2])
    assert "train-images-idx3-ubyte.gz is truncated" in fails("mnist")
    images.unlink()
    raw = gzip.decompress(whole)
    (src / "train-images-idx3-ubyte").write_bytes(raw[:-10])
    assert "holds 2090 bytes of data, not the 2100" in fails("mnist")
    (src / "train-images-idx3-ubyte").write_bytes(raw[:2] + b"\x09" + raw[3:])  # signed bytes, not unsigned
    assert "magic number 0x00000903, not 0x00000803" in fails("mnist")
    (src / "train-images-idx3-ubyte").unlink()
    assert "no train-images-idx3-ubyte[.gz] in" in fails("mnist")
    assert "does not exist" in fails("mnist", source=tmp_path / "nowhere")


def test_bad_cifar_archives(tmp_path, fdsl_cli):
    archive = tmp_path / "cifar-10-python.tar.gz"
    make_cifar(archive)
    whole = archive.read_bytes()
    archive.write_bytes(whole[:len(whole) * 2 // 3])
    err = error_line(fdsl_cli("data", "prepare", "cifar10", "--from", tmp_path, "--out", tmp_path / "o"))
    assert "cifar-10-python.tar.gz" in err and ("truncated" in err or "lacks" in err)
    assert "needs --from" in error_line(fdsl_cli("data", "prepare", "cifar10", "--out", tmp_path / "o"))
    evil = tmp_path / "evil"  # a pickle that would run code is refused, not loaded
    evil.mkdir()
    (evil / "batches.meta").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    for member in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (evil / member).write_bytes(b"")
    assert "names os.system" in error_line(fdsl_cli("data", "prepare", "cifar10", "--from", evil, "--out",
                                                    tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_rerun_is_done_and_other_options_are_refused(tmp_path, fdsl_cli):
    make_idx(tmp_path / "src")
    out = tmp_path / "out"
    command = ("data", "prepare", "mnist", "--from", tmp_path / "src", "--out", out, "--per-class", 2)
    assert fdsl_cli(*command)[0] == 0
    before = {p: os.path.getmtime(p) for p in written(out / "train").values()}
    code, stdout, _ = fdsl_cli(*command)
    assert code == 0 and "already prepared" in stdout
    assert "per_class 2 (now 3)" in error_line(fdsl_cli(*command[:-1], 3))
    assert {p: os.path.getmtime(p) for p in written(out / "train").values()} == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    assert "is not a prepared data set" in error_line(fdsl_cli(*command[:6], tmp_path / "busy"))
    (tmp_path / "busy" / "manifest.json").write_text('{"database": "fractaldb"}')  # an fdsl render folder
    assert "did not write" in error_line(fdsl_cli(*command[:6], tmp_path / "busy"))


def test_stale_temporary_folder_of_a_killed_run_is_removed(tmp_path, fdsl_cli):
    from fdsl.data.writers import temporary_name

    make_idx(tmp_path / "src", per_class=(2, 1))
    stale = temporary_name(str(tmp_path / "out")).replace(f"tmp{os.getpid()}.", "tmp999999999.")
    os.makedirs(stale)
    assert fdsl_cli("data", "prepare", "mnist", "--from", tmp_path / "src", "--out", tmp_path / "out")[0] == 0
    assert not os.path.exists(stale)


# -- what reads it -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_finetune_reads_the_prepared_folders(tmp_path, fdsl_cli, one_thread):
    make_idx(tmp_path / "src", per_class=(3, 1), size=(16, 16))
    data = tmp_path / "digits"
    assert fdsl_cli("data", "prepare", "mnist", "--from", tmp_path / "src", "--out", data,
                    "--per-class", 2, "--val-from-train", 1)[0] == 0
    code, _, err = fdsl_cli("finetune", data, *TINY_VIT, "--epochs", "1", "-b", "4", "-j", "0", "--val-split", "test",
                            "--output", tmp_path / "runs", "--experiment", "ft", "--log-interval", "1")
    assert code == 0, err
    rows = read_summary(tmp_path / "runs" / "ft")
    assert len(rows) == 1 and 0.0 <= float(rows[0]["eval_top1"]) <= 100.0


@pytest.mark.skipif(not os.path.isdir(DEBIAN_FASHION), reason="Debian package dataset-fashion-mnist not installed")
def test_reads_the_debian_fashion_mnist_files():
    from fdsl.data.downstream import open_source

    source = open_source("fashion-mnist", None)
    train, test = source.splits["train"], source.splits["test"]
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
