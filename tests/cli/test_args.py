"""The published command lines: every flag and default, both spellings, --config, hydra-style overrides, and
each paper command line running one tiny epoch (tiny image/model overrides appended, last flag wins)."""
import io
import os
import shlex
import tarfile

import numpy as np
import pytest
import yaml
from PIL import Image

from fdsl.cli import hydra
from fdsl.cli.args import build_parser, parse
from fdsl.cli.main import main
from fdsl.errors import UserError
from tests.helpers import REPO
from tests.helpers.runs import TINY_VIT, make_folder, read_summary, run_cli

# (dest, default) of the 89 entries of the published pretrain.py parser (docs/training.md), plus VA's two.
PUBLISHED_PRETRAIN = {
    "data_dir": None, "dataset": "", "train_split": "train", "val_split": "validation",
    "model": "deit_tiny_patch16_224", "pretrained": False, "resume": "", "no_resume_opt": False, "num_classes": None,
    "img_size": None, "input_size": None, "mean": None, "std": None, "interpolation": "", "batch_size": 32,
    "webdataset": False, "trainshards": None, "dataset_size": None, "opt": "sgd", "opt_eps": None, "opt_betas": None,
    "momentum": 0.9, "weight_decay": 1e-4, "clip_grad": None, "clip_mode": "norm", "sched": "step", "lr": 0.01,
    "lr_noise": None, "lr_noise_pct": 0.67, "lr_noise_std": 1.0, "lr_cycle_mul": 1.0, "lr_cycle_limit": 1,
    "warmup_lr": 1e-4, "min_lr": 1e-5, "epochs": 200, "epoch_repeats": 0.0, "start_epoch": None, "decay_epochs": 30,
    "warmup_epochs": 3, "warmup_iter": 0, "cooldown_epochs": 0, "patience_epochs": 10, "decay_rate": 0.1,
    "no_aug": False, "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3], "hflip": 0.5, "vflip": 0.0, "color_jitter": 0.4,
    "aa": None, "aug_splits": 0, "jsd": False, "reprob": 0.0, "remode": "const", "recount": 1, "resplit": False,
    "mixup": 0.0, "cutmix": 0.0, "cutmix_minmax": None, "mixup_prob": 1.0, "mixup_switch_prob": 0.5,
    "mixup_mode": "batch", "mixup_off_epoch": 0, "smoothing": 0.1, "train_interpolation": "random", "drop": 0.0,
    "drop_connect": None, "drop_path": None, "drop_block": None, "repeated_aug": False, "seed": 42,
    "dist_backend": "nccl", "log_interval": 50, "recovery_interval": 0, "checkpoint_hist": 10,
    "interval_saved_epochs": None, "workers": 4, "save_images": False, "amp": False, "apex_amp": False,
    "native_amp": False, "pin_mem": False, "no_prefetcher": False, "output": "./output", "experiment": "",
    "log_wandb": False, "project_name": "YOUR_WANDB_PPOJECT_NAME", "group_name": "YOUR_WANDB_GROUP_NAME",
    "entity_name": "YOUR_WANDB_ENTITY_NAME", "pause": None,
}
SHORT = {"-d": "dataset", "-b": "batch_size", "-w": "webdataset", "--dr": "decay_rate", "-j": "workers"}


def test_every_published_flag_and_default():
    args = parse("pretrain", [])
    for dest, default in PUBLISHED_PRETRAIN.items():
        assert getattr(args, dest) == pytest.approx(default) if isinstance(default, float) else \
            getattr(args, dest) == default, dest
    assert args.eval_metric == "loss"  # D2: top1 crashed the published pretrain
    options = {s for a in build_parser("pretrain")._actions for s in a.option_strings}
    assert set(SHORT) <= options
    ft = parse("finetune", [])
    assert (ft.pretrained_path, ft.crop_pct, ft.validation_batch_size_multiplier, ft.eval_metric) == ("", None, 1, "top1")
    assert not hasattr(ft, "trainshards")


def test_both_spellings_and_prefixes():
    a = parse("pretrain", ["D", "--interval_saved_epochs", "10", "--dataset-size", "5"])
    b = parse("pretrain", ["D", "--interval-saved-epochs=10", "--dataset_size=5"])
    c = parse("pretrain", ["D", "--interval", "10"])  # argparse prefixes still work
    assert a.interval_saved_epochs == b.interval_saved_epochs == c.interval_saved_epochs == 10
    assert a.dataset_size == b.dataset_size == 5


def test_config_recipe_then_flags_override(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"sched": "cosine_iter", "lr": 1e-3, "warmup-epochs": 5}))
    args = parse("pretrain", ["D", "--config", str(tmp_path / "r.yaml"), "--lr", "2e-3"])
    assert (args.sched, args.lr, args.warmup_epochs) == ("cosine_iter", 2e-3, 5)
    (tmp_path / "bad.yaml").write_text("shced: cosine\n")
    with pytest.raises(UserError, match="did you mean sched"):
        parse("pretrain", ["D", "--config", str(tmp_path / "bad.yaml")])


def test_repo_configs_are_valid():
    root = os.path.join(REPO, "configs")
    recipes = [f for f in os.listdir(root) if f.endswith(".yaml")] if os.path.isdir(root) else []
    for name in recipes:
        kind = "finetune" if "finetune" in name else "pretrain"
        parse(kind, ["D", "--config", os.path.join(root, name)])


def test_hydra_defaults_scaling_and_unknown_keys():
    argv = shlex.split("data=colorimagefolder data.baseinfo.name=CIFAR10 data.trainset.root=/t data.valset.root=/v "
                       "data.baseinfo.train_imgs=50000 data.baseinfo.val_imgs=10000 data.baseinfo.num_classes=10 "
                       "data.loader.batch_size=96 ckpt=/c.pth model=vit model.arch.model_name=vit_base_patch16_224 "
                       "model.optim.optimizer_name=sgd model.optim.learning_rate=0.01 "
                       "model.optim.weight_decay=1.0e-4 model.scheduler.args.warmup_epochs=10 epochs=1000 "
                       "mode=finetune output_dir=./output/finetune logger.entity=e logger.project=p "
                       "logger.group=g logger.experiment=x logger.save_epoch_freq=100")
    args = hydra.to_args(argv)
    assert (args.kind, args.model, args.opt, args.lr, args.weight_decay, args.num_classes) == \
        ("finetune", "vit_base_patch16_224", "sgd", 0.01, 1e-4, 10, )
    assert (args.lr_scale_batch, args.warmup_epochs, args.sched, args.aa, args.reprob) == \
        (512, 10, "cosine", "rand-m9-mstd0.5-inc1", 0.25)
    assert (args.pretrained_path, args.run_dir, args.interval_saved_epochs) == ("/c.pth", "./output/finetune", 100)
    with pytest.raises(UserError, match="did you mean model.optim.learning_rate"):
        hydra.to_args([*argv, "model.optim.learnig_rate=1"])
    with pytest.raises(UserError, match="mandatory"):
        hydra.to_args(["data=colorimagefolder", "model=vit", "mode=finetune"])
    gray = hydra.to_args(["data=grayimagefolder", "model=vit", "mode=pretrain", "output_dir=o",
                          "data.baseinfo.num_classes=3", "data.trainset.root=r"])
    assert (gray.kind, gray.no_aug, gray.mean, gray.batch_size, gray.mixup_prob) == ("pretrain", True, [0.5] * 3, 3, 0)


def write_shards(folder, num_shards=2, per_shard=8, classes=4, size=16):
    rng = np.random.default_rng(0)
    for s in range(num_shards):
        with tarfile.open(os.path.join(folder, f"SHARDS-{s:06d}.tar"), "w") as tar:
            for i in range(per_shard):
                key = f"{s:03d}{i:05d}"
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(i % classes).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return os.path.join(folder, f"SHARDS-{{000000..{num_shards - 1:06d}}}.tar")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    db = make_folder(root / "rcdb" / "image", classes=4, per_class=8, gray=True)
    ft = make_folder(root / "cifar", classes=5, per_class=8, splits=("train", "val"))
    os.makedirs(root / "shards")
    pattern = write_shards(str(root / "shards"))
    out = root / "out"
    assert main(["pretrain", db, *TINY_VIT, "-b", "8", "--epochs", "1", "-j", "0", "--output", str(out),
                 "--experiment", "pre"]) == 0
    return {"DB": db, "FT": ft, "TRAIN": ft + "/train", "VAL": ft + "/val", "SHARDS": pattern, "OUT": str(out),
            "CKPT": str(out / "pre" / "model_best.pth.tar")}


TINY_ARGS = " ".join(TINY_VIT) + " -b 8 --epochs 1 -j 0 --log-interval 100"
TINY_HYDRA = ("data.loader.batch_size=8 data.loader.num_workers=0 data.transform.input_size=16 epochs=1 "
              "+model.arch.patch_size=8 +model.arch.embed_dim=32 +model.arch.depth=1 +model.arch.num_heads=2 "
              "logger.print_iter_freq=100")
PRE = ("--input-size 3 224 224 --sched cosine_iter --epochs 2 --lr 1.0e-3 --weight-decay 0.05 --batch-size 64 "
       "--opt adamw --num-classes 10 --cooldown-epochs 0 --smoothing 0.1 --drop-path 0.1 "
       "--aa rand-m9-mstd0.5-inc1 --repeated-aug --mixup 0.8 --cutmix 1.0 --reprob 0.25 --remode pixel "
       "--interpolation bicubic --hflip 0.0 -j 16 --eval-metric loss")
FT = ("--input-size 3 224 224 --num-classes 10 --sched cosine_iter --epochs 2 --lr 1.0e-3 --weight-decay 0.05 "
      "--batch-size 64 --opt adamw --warmup-epochs 5 --cooldown-epochs 0 --smoothing 0.1 --aa rand-m9-mstd0.5-inc1 "
      "--repeated-aug --mixup 0.8 --cutmix 1.0 -j 16")
PAPER = {
    "cvpr22_exe_pretrain": f"pretrain {{DB}} --model deit_tiny_patch16_224 --experiment pretrain_deit_tiny_rcdb10_1.0e-3 "
                           f"{PRE} --warmup-epochs 5 --interval-saved-epochs 10 --output {{OUT}}/p --log-wandb",
    "cvpr22_exe_finetune": f"finetune {{FT}} --model deit_tiny_patch16_224 --experiment ft_from_rcdb10 {FT} "
                           "--output {OUT}/f --log-wandb --pretrained-path {CKPT}",
    "cvpr22_scripts_finetune": f"finetune {{FT}} --model deit_tiny_patch16_224 --experiment ft2 {FT} --drop-path 0.1 "
                               "--reprob 0.25 --output {OUT}/f --pretrained-path {CKPT}",
    "va_scripts_pretrain": f"pretrain {{DB}} --model deit_tiny_patch16_224 --experiment va_8192 {PRE} --min-lr 1.0e-5 "
                           "--warmup-lr 1.0e-6 --warmup-iter 5000 --pin-mem --amp --interval-saved-epochs 10 "
                           "--output {OUT}/p --log-wandb --entity-name e --project-name p --group-name g",
    "readme_pretrain_underscore": "pretrain {DB} --model deit_tiny_patch16_224 --experiment readme --epochs 1 "
                                  "--eval-metric loss --interval_saved_epochs 10 --output {OUT}/p",
    "readme_shards": "pretrain /NOT/WORKING -w --trainshards {SHARDS} --no-prefetcher -j 1 --num-classes 4 "
                     "--dataset_size 16 --model deit_tiny_patch16_224 --experiment shards --eval-metric loss "
                     "--output {OUT}/p",
    "readme_finetune_defaults": "finetune {FT} --model deit_tiny_patch16_224 --experiment readme_ft "
                                "--pretrained-path {CKPT} --output {OUT}/f",
    "va_hydra_finetune": "finetune data=colorimagefolder data.baseinfo.name=CIFAR10 data.trainset.root={TRAIN} "
                         "data.baseinfo.train_imgs=50000 data.valset.root={VAL} data.baseinfo.val_imgs=10000 "
                         "data.baseinfo.num_classes=10 data.loader.batch_size=96 logger.entity=e logger.project=p "
                         "logger.group=g logger.experiment=x logger.save_epoch_freq=100 ckpt={CKPT} model=vit "
                         "model.arch.model_name=vit_base_patch16_224 model.optim.optimizer_name=sgd "
                         "model.optim.learning_rate=0.01 model.optim.weight_decay=1.0e-4 "
                         "model.scheduler.args.warmup_epochs=10 epochs=1000 mode=finetune output_dir={OUT}/h1",
    "1pfrac_hydra_finetune": "finetune data=colorimagefolder data.baseinfo.name=CIFAR100 data.trainset.root={TRAIN} "
                             "data.baseinfo.train_imgs=50000 data.valset.root={VAL} data.baseinfo.val_imgs=10000 "
                             "data.baseinfo.num_classes=100 data.loader.batch_size=96 ckpt={CKPT} model=vit "
                             "model.arch.model_name=vit_tiny_patch16_224 model.optim.optimizer_name=sgd "
                             "model.optim.learning_rate=0.01 model.optim.weight_decay=1.0e-4 "
                             "model.scheduler.args.warmup_epochs=10 epochs=1000 mode=finetune output_dir={OUT}/h2",
    "1pfrac_hydra_pretrain": "finetune data=grayimagefolder data.baseinfo.name=sigma3.5_perturb0.1_sample4_ab "
                             "data.baseinfo.train_imgs=4 data.baseinfo.num_classes=4 data.trainset.root={DB} "
                             "data.loader.batch_size=32 data.transform.no_aug=False "
                             "data.transform.auto_augment=rand-m9-mstd0.5-inc1 data.transform.re_prob=0.5 "
                             "data.transform.color_jitter=0.4 data.transform.hflip=0.5 data.transform.vflip=0.5 "
                             "data.transform.scale=[0.08,1.0] data.transform.ratio=[0.75,1.3333] data.mixup.prob=1.0 "
                             "data.mixup.mixup_alpha=0.8 data.mixup.cutmix_alpha=1.0 data.mixup.switch_prob=0.5 "
                             "model=vit model.arch.model_name=vit_tiny_patch16_224 model.optim.learning_rate=0.001 "
                             "model.scheduler.args.warmup_epochs=5 logger.group=cpmpare_instance_augmentation "
                             "logger.save_epoch_freq=10000 epochs=80000 mode=pretrain output_dir={OUT}/h3",
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_command_line_runs_one_tiny_epoch(name, data, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    argv = shlex.split(PAPER[name].format(**data))
    argv += shlex.split(TINY_HYDRA if hydra.is_hydra(argv[1:]) else TINY_ARGS)
    assert main(argv) == 0
    out = [a.split("=", 1)[1] for a in argv if a.startswith("output_dir=")]
    run_dir = out[0] if out else os.path.join(argv[argv.index("--output") + 1], argv[argv.index("--experiment") + 1])
    assert os.path.isfile(os.path.join(run_dir, "last.pth.tar"))
    assert len(read_summary(run_dir)) == 1


def test_truncated_shard_is_one_clear_line(data, tmp_path):
    pattern = write_shards(str(tmp_path))
    path = str(tmp_path / "SHARDS-000001.tar")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    proc = run_cli("pretrain", "-w", "--trainshards", pattern, "--num-classes", "4", "--dataset_size", "32",
                   *TINY_VIT, "-b", "4", "--epochs", "1", "-j", "0", "--output", tmp_path, "--experiment", "t",
                   check=False)
    assert proc.returncode == 2 and "SHARDS-000001.tar" in proc.stderr and "truncated" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_hydra_key_is_one_clear_line(data):
    proc = run_cli("finetune", "data=colorimagefolder", "model=vit", "mode=finetune", "output_dir=x",
                   "data.trainset.root=y", "data.baseinfo.num_classes=3", "model.optim.lr=1", check=False)
    assert proc.returncode == 2 and "did you mean model.optim.learning_rate" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_top_level_scripts_only_parse_and_call(tmp_path):
    import subprocess
    import sys

    for script in ("pretrain.py", "finetune.py"):
        proc = subprocess.run([sys.executable, os.path.join(REPO, script), "--help"], capture_output=True, text=True,
                              cwd=tmp_path, check=False)
        assert proc.returncode == 0 and "--batch-size" in proc.stdout and "--interval-saved-epochs" in proc.stdout


@pytest.mark.parametrize("command", ["pretrain", "finetune", "deepercluster", "eval-linear", "eval-voc", "eval-pretrain"])
def test_help_and_a_bad_flag_answer_before_torch_is_imported(command):
    """The training commands parse first and import torch and timm only to run (~7 s here)."""
    import subprocess
    import sys

    code = ("import sys\nfrom fdsl.cli.main import main\ncodes = []\n"
            "for argv in (['--help'], ['--no-such-flag']):\n"
            "    try:\n"
            f"        codes.append(main([{command!r}, *argv]))\n"
            "    except SystemExit as stop:\n"
            "        codes.append(stop.code)\n"
            "print(codes, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.stdout.strip().splitlines()[-1] == "[0, 2] False", proc.stdout[-500:] + proc.stderr[-1000:]
    error = f"fdsl {command}: error: unrecognized arguments: --no-such-flag (see fdsl {command} --help)"
    assert proc.stderr.strip().splitlines() == [error], proc.stderr
