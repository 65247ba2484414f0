"""End-to-end runs of `fdsl pretrain` / `fdsl finetune` on tiny folders (CPU, seconds each)."""
import argparse
import math
import os

import pytest
import torch

from tests.helpers.runs import TINY_VIT, make_folder, read_summary, run_cli

FAST = ["-j", "0", "--log-interval", "100", "--warmup-epochs", "0"]


@pytest.fixture(scope="module")
def pretrain_db(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("db") / "image", classes=4, per_class=12, gray=True)


@pytest.fixture(scope="module")
def finetune_db(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("ft"), classes=5, per_class=8, splits=("train", "val"))


@pytest.fixture(scope="module")
def pretrained_run(pretrain_db, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    run_cli("pretrain", pretrain_db, *TINY_VIT, *FAST, "-b", "8", "--epochs", "2", "--opt", "adamw", "--lr", "1e-3",
            "--sched", "cosine_iter", "--interval_saved_epochs", "1", "--output", out, "--experiment", "pre")
    return out / "pre"


def test_pretrain_writes_the_published_layout(pretrained_run):
    names = set(os.listdir(pretrained_run))
    assert {"args.yaml", "summary.csv", "last.pth.tar", "model_best.pth.tar", "checkpoint-0.pth.tar",
            "checkpoint-1.pth.tar", "held-checkpoint-0.pth.tar", "held-checkpoint-1.pth.tar"} <= names
    assert [r["epoch"] for r in read_summary(pretrained_run)] == ["0", "1"]
    ckpt = torch.load(pretrained_run / "last.pth.tar", weights_only=True)
    assert {"epoch", "arch", "state_dict", "optimizer", "version", "args", "metric"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["version"] == 2 and isinstance(ckpt["args"], dict)
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])


def test_loss_decreases_on_a_learnable_task(finetune_db, tmp_path):
    run_cli("finetune", finetune_db, *TINY_VIT, *FAST, "-b", "8", "--epochs", "8", "--opt", "adamw", "--lr", "3e-3",
            "--sched", "none", "--smoothing", "0", "--scale", "1", "1", "--hflip", "0", "--output", tmp_path,
            "--experiment", "learn")
    rows = read_summary(tmp_path / "learn")
    assert float(rows[-1]["train_loss"]) < 0.6 * float(rows[0]["train_loss"])
    assert max(float(r["eval_top1"]) for r in rows) >= 60.0


def test_resume_gives_the_same_final_weights(pretrain_db, tmp_path):
    common = [pretrain_db, *TINY_VIT, "-j", "1", "--log-interval", "100", "-b", "8", "--epochs", "3", "--opt",
              "adamw", "--lr", "1e-3", "--sched", "cosine_iter", "--warmup-epochs", "1", "--mixup", "0.8",
              "--cutmix", "1.0", "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--remode", "pixel",
              "--drop-path", "0.1", "--repeated-aug", "--output", tmp_path]
    run_cli("pretrain", *common, "--experiment", "straight")
    run_cli("pretrain", *common, "--experiment", "broken", "--pause", "1")
    assert torch.load(tmp_path / "broken" / "last.pth.tar", weights_only=True)["epoch"] == 0
    run_cli("pretrain", *common, "--experiment", "broken", "--resume", "auto")
    a = torch.load(tmp_path / "straight" / "last.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "broken" / "last.pth.tar", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=0, msg=key)
    assert [r["epoch"] for r in read_summary(tmp_path / "broken")] == ["0", "1", "2"]


def test_eval_interval_validates_every_n_epochs_and_the_last(finetune_db, tmp_path):
    run_cli("finetune", finetune_db, *TINY_VIT, *FAST, "-b", "8", "--epochs", "5", "--eval-interval", "2",
            "--output", tmp_path, "--experiment", "ei")
    rows = read_summary(tmp_path / "ei")
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [bool(r.get("eval_top1")) for r in rows] == [False, True, False, True, True]
    best = torch.load(tmp_path / "ei" / "model_best.pth.tar", weights_only=True)
    assert best["epoch"] in (1, 3, 4) and best["metric"] is not None


def test_finetune_from_fdsl_checkpoint(pretrained_run, finetune_db, tmp_path):
    proc = run_cli("finetune", finetune_db, *TINY_VIT, *FAST, "-b", "8", "--epochs", "1", "--num-classes", "5",
                   "--input-size", "3", "24", "24", "--pretrained-path", pretrained_run / "model_best.pth.tar",
                   "--output", tmp_path, "--experiment", "ft")
    assert "resizing pos_embed" in proc.stdout and "dropping head.weight" in proc.stdout
    assert "missing ['head.weight', 'head.bias']" in proc.stdout
    assert {"eval_top1", "eval_top5"} <= set(read_summary(tmp_path / "ft")[0])


def test_finetune_from_published_checkpoint(pretrained_run, finetune_db, tmp_path):
    ours = torch.load(pretrained_run / "last.pth.tar", weights_only=True)
    published = {"epoch": 1, "arch": "deit_tiny_patch16_224", "version": 2, "metric": 1.0,
                 "state_dict": {"module." + k: v for k, v in ours["state_dict"].items()},
                 "optimizer": ours["optimizer"], "args": argparse.Namespace(model="deit_tiny_patch16_224", lr=1e-3)}
    torch.save(published, tmp_path / "published.pth.tar")
    torch.save(ours["state_dict"], tmp_path / "plain.pth")
    torch.save({"model": ours["state_dict"], "epoch": 3}, tmp_path / "hydra_trainer.pth")  # VA/1p-frac format
    for name in ("published.pth.tar", "plain.pth", "hydra_trainer.pth"):
        proc = run_cli("finetune", finetune_db, *TINY_VIT, *FAST, "-b", "8", "--epochs", "1",
                       "--pretrained-path", tmp_path / name, "--output", tmp_path / "runs", "--experiment", name)
        assert "loaded 18 tensors" in proc.stdout, proc.stdout


@pytest.mark.parametrize("case", ["missing", "empty", "few_classes", "big_batch", "resume_missing", "other_arch",
                                  "unknown_sched"])
def test_bad_input_is_one_line_and_nonzero(case, pretrain_db, pretrained_run, tmp_path):
    os.makedirs(tmp_path / "empty" / "a")
    argv = {
        "missing": ["pretrain", tmp_path / "nope"],
        "empty": ["pretrain", tmp_path / "empty"],
        "few_classes": ["pretrain", pretrain_db, "--num-classes", "2"],
        "big_batch": ["pretrain", pretrain_db, "-b", "1000"],
        "resume_missing": ["pretrain", pretrain_db, "--resume", tmp_path / "nope.pth.tar"],
        "other_arch": ["finetune", pretrain_db, "--pretrained-path", pretrained_run / "last.pth.tar",
                       "--model-kwargs", "patch_size=4", "embed_dim=48", "depth=1", "num_heads=2"],
        "unknown_sched": ["pretrain", pretrain_db, "--sched", "cosine-iter"],
    }[case]
    proc = run_cli(*argv, *TINY_VIT[:2], "--input-size", "3", "16", "16", *FAST, "--output", tmp_path / "o",
                   "--experiment", "x", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("fdsl "), proc.stderr
    assert not (tmp_path / "o" / "x" / "last.pth.tar").exists()


def test_corrupt_image_is_skipped_with_a_warning(tmp_path):
    db = make_folder(tmp_path / "db", classes=2, per_class=8)
    (tmp_path / "db" / "00000" / "00000_0000.png").write_bytes(b"not a png")
    proc = run_cli("pretrain", db, *TINY_VIT, *FAST, "-b", "4", "--epochs", "1", "--output", tmp_path,
                   "--experiment", "c", "--sched", "none")
    assert "skipping unreadable image" in proc.stderr and "00000_0000.png" in proc.stderr


def test_nan_loss_stops_cleanly_keeping_last_checkpoint(pretrain_db, tmp_path):
    common = [pretrain_db, *TINY_VIT, *FAST, "-b", "8", "--opt", "sgd", "--sched", "none", "--output", tmp_path,
              "--experiment", "nan"]
    run_cli("pretrain", *common, "--epochs", "1", "--lr", "1e-3")
    good = torch.load(tmp_path / "nan" / "last.pth.tar", weights_only=True)
    proc = run_cli("pretrain", *common, "--epochs", "3", "--lr", "1e30", "--resume", "auto", "--no-resume-opt",
                   check=False)
    assert proc.returncode != 0 and "last good checkpoint kept" in proc.stderr, proc.stderr
    kept = torch.load(tmp_path / "nan" / "last.pth.tar", weights_only=True)
    assert kept["epoch"] == good["epoch"] == 0


def test_rerun_into_a_finished_run_is_refused_not_overwritten(pretrained_run, pretrain_db):
    before = (pretrained_run / "last.pth.tar").stat().st_mtime_ns
    proc = run_cli("pretrain", pretrain_db, *TINY_VIT, *FAST, "-b", "8", "--epochs", "1",
                   "--output", pretrained_run.parent, "--experiment", "pre", check=False)
    assert proc.returncode == 2 and "--resume auto" in proc.stderr
    assert (pretrained_run / "last.pth.tar").stat().st_mtime_ns == before
    assert len(read_summary(pretrained_run)) == 2


def test_augmix_jsd_trains_an_epoch_with_a_finite_loss(pretrain_db, tmp_path):
    proc = run_cli("pretrain", pretrain_db, *TINY_VIT, *FAST, "-b", "4", "--epochs", "1", "--aug-splits", "3",
                   "--jsd", "--aa", "augmix-m3-w2-d1", "--sched", "none", "--output", tmp_path, "--experiment", "jsd")
    assert "batch/process=4 x 3 AugMix splits" in proc.stdout
    assert math.isfinite(float(read_summary(tmp_path / "jsd")[0]["train_loss"]))


def test_augmix_batch_is_splits_times_the_batch(pretrain_db):
    from fdsl.cli.args import parse
    from fdsl.engine.data import build_train_source
    from fdsl.engine.distributed import DistInfo
    from fdsl.models import factory
    from fdsl.recipes.common import model_spec
    from fdsl.recipes.supervised import data_spec

    args = parse("pretrain", [pretrain_db, *TINY_VIT, "-j", "0", "-b", "4", "--aug-splits", "3", "--jsd",
                              "--aa", "augmix-m3-w2-d1"])
    info = DistInfo()
    spec = data_spec(args)
    data = build_train_source(spec, info)
    model = factory.create(model_spec(args), data.num_classes)
    data.set_transforms(spec, model)
    images, targets = next(iter(data.loader(spec, info)))
    assert images.shape == (12, 3, 16, 16) and model(images).shape == (12, 4)
    assert torch.equal(targets[:4], targets[4:8]) and torch.equal(targets[:4], targets[8:])
    clean, augmented, _ = torch.split(images, 4)
    assert not torch.equal(clean, augmented)  # split 0 is clean, the others AugMix views of the same images
    from timm.loss import JsdCrossEntropy

    from fdsl.recipes.supervised import build_loss

    assert isinstance(build_loss(args, mixup_active=False), JsdCrossEntropy)


@pytest.mark.parametrize("flags", [["--aug-splits", "1"], ["--jsd"], ["--aug-splits", "2", "--jsd", "--mixup", "0.8"],
                                   ["--split-bn"], ["--aug-splits", "2", "--no-aug"]])
def test_bad_augmix_flags_are_rejected(flags):
    from fdsl.cli.args import parse
    from fdsl.engine.data import check_aug_splits
    from fdsl.errors import UserError
    from fdsl.recipes.supervised import data_spec

    with pytest.raises(UserError):
        check_aug_splits(data_spec(parse("pretrain", flags)))


def test_bad_augmix_flags_are_one_line_and_nonzero(pretrain_db, tmp_path):
    proc = run_cli("pretrain", pretrain_db, *TINY_VIT, *FAST, "--jsd", "--output", tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("fdsl pretrain: error: --jsd needs"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())  # nothing written


def test_plateau_state_survives_resume(pretrain_db, tmp_path):
    # lr 0 and no augmentation: the loss repeats, so every epoch after the first is a bad one
    common = [pretrain_db, *TINY_VIT, *FAST, "-b", "48", "--epochs", "4", "--opt", "sgd", "--lr", "0", "--sched",
              "plateau", "--patience-epochs", "10", "--scale", "1", "1", "--hflip", "0", "--color-jitter", "0",
              "--output", tmp_path]
    run_cli("pretrain", *common, "--experiment", "straight")
    run_cli("pretrain", *common, "--experiment", "broken", "--pause", "2")
    paused = torch.load(tmp_path / "broken" / "last.pth.tar", weights_only=True)["scheduler"]["plateau"]
    assert paused["num_bad_epochs"] == 1 and math.isfinite(paused["best"])
    run_cli("pretrain", *common, "--experiment", "broken", "--resume", "auto")
    a = torch.load(tmp_path / "straight" / "last.pth.tar", weights_only=True)["scheduler"]
    b = torch.load(tmp_path / "broken" / "last.pth.tar", weights_only=True)["scheduler"]
    assert a == b and a["plateau"]["num_bad_epochs"] == 3, (a, b)


def test_skipped_images_are_counted_across_workers(tmp_path):
    db = make_folder(tmp_path / "db", classes=2, per_class=8)
    (tmp_path / "db" / "00001" / "00001_0003.png").write_bytes(b"not a png")
    proc = run_cli("pretrain", db, *TINY_VIT, *FAST, "-j", "2", "-b", "4", "--epochs", "2", "--output", tmp_path,
                   "--experiment", "c", "--sched", "none")  # 16 images, batch 4: each is read once per epoch
    assert proc.returncode == 0
    for epoch in (0, 1):
        assert f"epoch {epoch}: skipped 1 unreadable image(s), e.g. " in proc.stdout, proc.stdout
    assert "00001_0003.png" in proc.stdout.split("skipped 1 unreadable")[1].splitlines()[0]


def test_split_bn_gives_each_augmix_split_its_own_batchnorm(pretrain_db, tmp_path):
    run_cli("pretrain", pretrain_db, "--model", "resnet10t", "--input-size", "3", "16", "16", *FAST, "-b", "4",
            "--epochs", "1", "--aug-splits", "2", "--split-bn", "--sched", "none", "--output", tmp_path,
            "--experiment", "sbn")
    sd = torch.load(tmp_path / "sbn" / "last.pth.tar", weights_only=True)["state_dict"]
    assert any(".aux_bn.0." in k for k in sd) and not any(".aux_bn.1." in k for k in sd)


@pytest.mark.parametrize("resplit", [False, True])
def test_resplit_keeps_the_clean_augmix_view_unerased(resplit, pretrain_db):
    from fdsl.cli.args import parse
    from fdsl.engine.data import build_train_source
    from fdsl.engine.distributed import DistInfo
    from fdsl.models import factory
    from fdsl.recipes.common import model_spec
    from fdsl.recipes.supervised import data_spec

    # a full-image crop and no flip: the clean view is deterministic unless it is randomly erased
    args = parse("pretrain", [pretrain_db, *TINY_VIT, "--aug-splits", "2", "--aa", "augmix-m3-w2-d1", "--scale", "1",
                              "1", "--ratio", "1", "1", "--hflip", "0", "--reprob", "1"] + ["--resplit"] * resplit)
    spec = data_spec(args)
    data = build_train_source(spec, DistInfo())
    data.set_transforms(spec, factory.create(model_spec(args), data.num_classes))
    torch.manual_seed(0)
    first, second = data.loader_dataset[0][0][0], data.loader_dataset[0][0][0]
    assert torch.equal(first, second) == resplit
