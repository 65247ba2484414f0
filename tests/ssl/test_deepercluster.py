"""`fdsl deepercluster` end to end on tiny images: the three modes learn, a resume in the middle of a round
is exact, the round archive is numpy-readable, every data source works, bad input is one line, and two gloo
processes cluster the same images like one."""
import csv
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from fdsl.ssl.clustering import load_round
from tests.helpers import REPO
from tests.helpers.cluster_images import make_oriented

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones

TINY = ["--width", "0.0625", "--img_size", "32", "--dim_pca", "8", "--batch_size", "8", "--workers", "0",
        "--niter", "5", "--log_interval", "100", "--save_every", "0"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_oriented(tmp_path_factory.mktemp("oriented"), classes=4, per_class=8)


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("mode,flags", [
    ("DeepCluster", ["--super_classes", "1", "--rotnet", "false", "--k", "4", "--sobel", "true", "--epoch_size",
                     "data"]),
    ("RotNet", ["--super_classes", "4", "--k", "1", "--rotnet", "true"]),
    ("DeeperCluster", ["--super_classes", "8", "--k", "4", "--rotnet", "on", "--epoch_size", "32"]),
])
def test_each_mode_learns(fdsl_cli, images, tmp_path, mode, flags):
    run = tmp_path / mode
    code, out, err = fdsl_cli("deepercluster", "--data_path", images, *TINY, *flags, "--nepochs", "20",
                              "--reassignment", "10", "--lr", "0.02", "--dump_path", run)
    assert code == 0, err
    assert f"({mode})" in out
    losses = [float(r["train_loss"]) for r in summary(run)]
    assert len(losses) == 20
    assert np.mean(losses[-4:]) < 0.93 * np.mean(losses[:4]), losses
    assert [r["cluster_round"] for r in summary(run)] == ["0"] * 10 + ["10"] * 10


def test_resume_in_the_middle_of_a_round_is_exact(fdsl_cli, images, tmp_path):
    """3 epochs of 4 steps, a round every 2 epochs: stopped at step 6 (epoch 1, inside round 0) and resumed,
    the weights equal those of a run that never stopped; the round of epoch 2 is clustered in both."""
    flags = ["--data_path", images, *TINY, "--super_classes", "8", "--k", "4", "--nepochs", "3", "--reassignment",
             "2", "--lr", "0.02", "--epoch_size", "32"]
    assert fdsl_cli("deepercluster", *flags, "--dump_path", tmp_path / "straight")[0] == 0
    code, out, _ = fdsl_cli("deepercluster", *flags, "--dump_path", tmp_path / "resumed", "--pause_updates", "6")
    assert code == 0 and "stopped at epoch 1 step 2/4" in out
    code, out, _ = fdsl_cli("deepercluster", *flags, "--dump_path", tmp_path / "resumed")
    assert code == 0 and "resumed from" in out and "clustering epoch 0" not in out
    a = torch.load(tmp_path / "straight" / "last.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pth.tar", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["method"] == b["method"] == {"round_epoch": 2}
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    straight, resumed = summary(tmp_path / "straight"), summary(tmp_path / "resumed")
    assert straight[0] == resumed[0] and straight[2] == resumed[2]  # row 1: the loss of the resumed part only

    # the archive: numpy-readable, labels consistent with the counts, NMIs logged
    rnd = load_round(str(tmp_path / "straight" / "clusters" / "round-0002.npz"))
    assert rnd["labels"].shape == (32,) and rnd["sub_centroids"].shape == (2, 2, 8)
    assert np.array_equal(rnd["labels"], rnd["super_labels"] * 2 + rnd["sub_labels"])
    assert np.array_equal(np.bincount(rnd["super_labels"], minlength=2), rnd["super_counts"])
    assert rnd["sub_counts"].min() >= 1 and 0 <= float(rnd["nmi_previous"]) <= 1
    with np.load(tmp_path / "straight" / "clusters" / "pca-0000.npz") as pca:
        assert pca["projection"].shape == (256, 8)  # fc7 of the 1/16-wide VGG16
    with open(tmp_path / "straight" / "clusters" / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "2"] and rows[0]["nmi_previous"] == "" and rows[1]["nmi_classes"]
    assert all(float(r[k]) >= 0 for r in rows for k in ("seconds_features", "seconds_pca", "seconds_kmeans"))


def _write_shard(path, images_root):
    with tarfile.open(path, "w") as tar:
        for i, (dirpath, _, files) in enumerate(sorted(os.walk(images_root))):
            for name in sorted(files):
                key = f"{i:02d}{name[:-4]}"
                with open(os.path.join(dirpath, name), "rb") as f:
                    png = f.read()
                for ext, data in (("png", png), ("cls", str(i).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def test_shards_and_on_the_fly_databases_are_sources(fdsl_cli, images, tmp_path):
    _write_shard(tmp_path / "s-000.tar", images)
    common = [*TINY, "--super_classes", "1", "--rotnet", "false", "--k", "3", "--nepochs", "1"]
    code, out, err = fdsl_cli("deepercluster", "--trainshards", tmp_path / "s-{000..000}.tar", *common,
                              "--dump_path", tmp_path / "shards")
    assert code == 0, err
    assert "32 images" in out and "NMI with the class folders" in out
    assert "8 images/epoch" in out  # DeepCluster, as published: a quarter of the data set per epoch
    code, out, err = fdsl_cli("deepercluster", "--synthetic", "rcdb", "--num_classes", "4",
                              "--synthetic_instances", "4", *common, "--batch_size", "4",
                              "--dump_path", tmp_path / "synthetic")
    assert code == 0, err
    assert "rcdb rendered on the fly" in out and "16 images" in out


@pytest.mark.parametrize("flags,message", [
    (["--k", "40"], "--k 40 is larger than the data set (32 images)"),
    (["--k", "4", "--dim_pca", "257"], "--dim_pca 257 is above the feature size 256"),
    (["--k", "4", "--super_classes", "6", "--rotnet", "true"], "multiple of 4"),
    (["--k", "64", "--super_classes", "256", "--rotnet", "true"], "too small for 64 super-clusters"),
    (["--k", "4", "--pretrained", "/no/such.pth"], "--pretrained '/no/such.pth' does not exist"),
    (["--k", "4", "--rotnet", "maybe"], "invalid boolean 'maybe'"),
    (["--k", "4", "--super_classes", "8"], "each of the 8 training groups 4 images"),  # 32 // 2 // 4 < batch 8
])
def test_bad_input_is_one_line(fdsl_cli, images, tmp_path, flags, message):
    code, _, err = fdsl_cli("deepercluster", "--data_path", images, *TINY, *flags, "--dump_path", tmp_path / "x")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x" / "last.pth.tar").exists()


def test_a_checkpoint_for_the_other_input_is_refused(fdsl_cli, images, tmp_path):
    from fdsl.models.vgg import create_vgg16

    torch.save({"state_dict": {f"module.body.{k}": v for k, v in
                               create_vgg16(sobel=True, img_size=32, width=0.0625).body.state_dict().items()}},
               tmp_path / "sobel.pth")
    code, _, err = fdsl_cli("deepercluster", "--data_path", images, *TINY, "--k", "4", "--sobel", "false",
                            "--pretrained", tmp_path / "sobel.pth", "--dump_path", tmp_path / "x")
    assert code == 2 and "trained with Sobel (2 channels) input" in err


@pytest.mark.slow
def test_two_gloo_processes_cluster_like_one(fdsl_cli, images, tmp_path):
    """torchrun, 2 CPU processes: the run completes, and the first round's assignments (computed before any
    training) are those of a 1-process run: the clustering does not depend on the world size."""
    flags = ["--data_path", images, *TINY, "--batch_size", "4", "--super_classes", "8", "--k", "4", "--nepochs",
             "1", "--dist-timeout", "60", "--epoch_size", "32"]
    env = {**os.environ, "PYTHONPATH": REPO, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    from tests.helpers.runs import free_port

    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()), "-m", "fdsl", "deepercluster", *flags, "--dump_path", tmp_path / "two"],
                         env=env, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert "world=2 (torchrun, cpu)" in two.stdout and two.stdout.count("clustering epoch 0: k-means") == 1
    assert fdsl_cli("deepercluster", *flags, "--dump_path", tmp_path / "one")[0] == 0
    a = load_round(str(tmp_path / "one" / "clusters" / "round-0000.npz"))
    b = load_round(str(tmp_path / "two" / "clusters" / "round-0000.npz"))
    assert (a["labels"] == b["labels"]).mean() >= 0.95
    assert len(summary(tmp_path / "two")) == 1
