"""timm users' habits on `fdsl pretrain` / `fdsl finetune`: --dataset forms (folder, wds/...; the others refused in
one line), --initial-checkpoint, --device mps, and --help that opens with examples that parse."""
import re
import shlex

import pytest
import torch

from fdsl.cli import args as cli_args
from fdsl.cli import finetune, hydra, pretrain, timm_flags
from fdsl.data import builder, registry
from fdsl.engine import distributed
from fdsl.errors import UserError
from tests.helpers import REPO
from tests.helpers.runs import TINY_VIT, make_folder, read_summary

TINY = [*TINY_VIT, "-b", "8", "--epochs", "1", "-j", "0", "--log-interval", "100"]


@pytest.mark.parametrize("form", ["", "folder", "ImageFolder", "image_folder"])
def test_folder_forms_read_the_image_folder(form):
    args = cli_args.parse("pretrain", ["D", "--dataset", form])
    assert (args.data_dir, args.webdataset, args.trainshards) == ("D", False, None)
    assert cli_args.parse("finetune", ["D", "-d", form]).dataset == form


@pytest.mark.parametrize("form", ["torch/cifar10", "hfds/timm/mini-imagenet", "hfids/x", "tfds/imagenet2012",
                                  "imagenet", "ImageTar"])
def test_other_forms_are_one_line_naming_the_form_and_what_fdsl_reads(form, fdsl_cli):
    for kind in ("pretrain", "finetune"):
        code, out, err = fdsl_cli(kind, "D", "--dataset", form)
        assert code == 2 and out == ""
        assert err.count("\n") == 1, err
        assert f"--dataset {form!r}" in err and "image folder" in err and "wds/NAME" in err, err


def test_wds_takes_timms_train_split_pattern_and_sample_count(tmp_path):
    pattern = "imagenet-train-{0000..0009}.tar"
    args = cli_args.parse("pretrain", [str(tmp_path), "--dataset", "wds/imagenet", "--train-split", f"{pattern}|640",
                                       "--num-classes", "1000"])
    assert (args.webdataset, args.trainshards, args.dataset_size) == (True, str(tmp_path / pattern), 640)
    args = cli_args.parse("pretrain", ["D", "--dataset", "wds/x", "--train-split", "/abs/s-{0..1}.tar", "--dataset_size",
                                       "7", "--num-classes", "2"])
    assert (args.trainshards, args.dataset_size) == ("/abs/s-{0..1}.tar", 7)  # an absolute pattern is not under DIR
    args = cli_args.parse("pretrain", ["--dataset", "wds", "--trainshards", "P-{0..3}.tar", "--num-classes", "2"])
    assert (args.webdataset, args.trainshards, args.dataset_size) == (True, "P-{0..3}.tar", None)
    ft = cli_args.parse("finetune", [str(tmp_path), "-d", "WDS/x", "--train-split", "t-{00..02}.tar", "--num-classes", "3"])
    assert (ft.webdataset, ft.trainshards, ft.dataset_size) == (True, str(tmp_path / "t-{00..02}.tar"), None)
    with pytest.raises(UserError, match=r"--train-split s-\{0..1\}.tar\|many: .*sample count"):
        cli_args.parse("pretrain", ["D", "-d", "wds/x", "--train-split", "s-{0..1}.tar|many"])
    with pytest.raises(UserError, match="--dataset wds/x needs --num-classes"):
        cli_args.parse("pretrain", ["D", "-d", "wds/x", "--train-split", "s-{0..1}.tar"])


def test_wds_finds_the_shards_fdsl_wrote_in_dir_and_names_a_gap(tmp_path):
    for k in (0, 1, 2, 4):
        (tmp_path / f"SHARDS-{k:06d}.tar").write_bytes(b"")
    with pytest.raises(UserError, match=r"lacks 1 shard\(s\) .*first missing: SHARDS-000003.tar"):
        cli_args.parse("pretrain", [str(tmp_path), "--dataset", "wds/rcdb", "--num-classes", "4"])
    (tmp_path / "SHARDS-000003.tar").write_bytes(b"")
    args = cli_args.parse("pretrain", [str(tmp_path), "--dataset", "wds/rcdb", "--num-classes", "4"])
    assert args.trainshards == str(tmp_path / "SHARDS-{000000..000004}.tar")
    with pytest.raises(UserError, match="name the shards.*holds no SHARDS-"):
        cli_args.parse("pretrain", [str(tmp_path / "other"), "--dataset", "wds/rcdb", "--num-classes", "4"])


def test_dataset_conflicts_are_one_line():
    with pytest.raises(UserError, match="--synthetic rcdb renders its own images; drop --dataset wds/x"):
        cli_args.parse("pretrain", ["--synthetic", "rcdb", "--dataset", "wds/x", "--trainshards", "P"])
    with pytest.raises(UserError, match="--dataset folder reads an image folder but -w"):
        cli_args.parse("pretrain", ["-w", "--trainshards", "P", "--dataset", "folder"])
    assert cli_args.parse("pretrain", ["-w", "--trainshards", "P"]).webdataset  # the published line is unchanged


def test_pretrain_on_wds_shards_then_finetune_with_initial_checkpoint(tmp_path, fdsl_cli, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    shards = tmp_path / "shards"
    db = registry.create("rcdb", classes=4, instances=4, size=16)
    builder.build(builder.BuildPlan(db, str(shards), fmt="wds", shard_size=8), progress=False)
    code, out, err = fdsl_cli("pretrain", shards, "--dataset", "wds/rcdb", "--num-classes", "4", *TINY,
                              "--output", tmp_path, "--experiment", "pre")
    assert code == 0, err
    assert "epoch: 16 samples" in out and len(read_summary(tmp_path / "pre")) == 1
    folder = make_folder(tmp_path / "ft", classes=3, per_class=8, splits=("train", "val"))
    checkpoint = tmp_path / "pre" / "last.pth.tar"
    code, out, err = fdsl_cli("finetune", folder, "--initial-checkpoint", checkpoint, *TINY, "--output", tmp_path,
                              "--experiment", "ft")
    assert code == 0, err
    assert "pretrained: loaded" in out and str(checkpoint) in out
    assert cli_args.parse("finetune", ["D", "--initial-checkpoint", "c.pth"]).pretrained_path == "c.pth"


def test_device_mps_where_torch_has_it(monkeypatch):
    monkeypatch.setattr(timm_flags, "mps_available", lambda: True)
    args = cli_args.parse("pretrain", ["D", "--device", "mps"])
    assert args.device == "mps"
    assert distributed.select_device(distributed.DistInfo(), args.device) == torch.device("mps")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_device_mps_without_it_is_one_line(fdsl_cli):
    code, _, err = fdsl_cli("pretrain", "D", "--device", "mps")
    assert code == 2 and err.count("\n") == 1
    assert "--device mps: this torch or machine has no MPS" in err and "use --device cpu" in err
    code, _, err = fdsl_cli("finetune", "D", "--device", "tpu")
    assert code == 2 and "--device tpu: not a device; use cpu, cuda, cuda:N or mps" in err


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
@pytest.mark.parametrize("flags,message", [(["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
                                           (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'")])
def test_a_bad_flag_is_one_line_not_the_usage(fdsl_cli, kind, flags, message):
    """pretrain and finetune use the parser of every other command: a bad flag is one line naming it."""
    code, out, err = fdsl_cli(kind, "D", *flags)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"fdsl {kind}: error: {message}") and f"(see fdsl {kind} --help)" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_a_gpu_is_one_line():
    with pytest.raises(UserError, match="--device cuda:1: no CUDA GPU is visible"):
        cli_args.parse("finetune", ["D", "--device", "cuda:1"])


def help_examples(module) -> list[list[str]]:
    """The example command lines at the top of a command's --help (continuations joined, comments dropped)."""
    text = module.EXAMPLES.split("examples:\n", 1)[1].replace("\\\n", " ")
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in text.splitlines() if line.startswith("  ")]
    return [shlex.split(line) for line in lines]


@pytest.mark.parametrize("module", [pretrain, finetune])
def test_help_opens_with_examples_that_parse(module, capsys, monkeypatch):
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    head = out.splitlines()[:6]
    assert head[0].startswith("usage: fdsl ") and len(head[0]) < 110 and "examples:" in head
    assert "--initial-checkpoint" in out or module is pretrain
    examples = help_examples(module)
    assert len(examples) >= 5
    monkeypatch.chdir(REPO)  # configs/... are relative to the checkout
    kind = module.__name__.rsplit(".", 1)[1]
    for words in examples:
        script = next(w for w in words if w in ("fdsl", "pretrain.py", "finetune.py"))
        argv = words[words.index(script) + (2 if script == "fdsl" else 1):]
        if hydra.is_hydra(argv):
            assert hydra.to_args(argv).kind == kind
        else:
            assert cli_args.parse(kind, argv).kind == kind
