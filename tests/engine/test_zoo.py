"""Every checkpoint layout of docs/zoo.md, built small: finetune.py (--pretrained-path), `fdsl evaluate` and
`fdsl export` read it, with the same weights; a file that fits no layout is one line naming the nearest."""
import argparse
import json
import os
import re

import pytest
import torch
from safetensors.torch import load_file

from fdsl.engine import checkpoint, released, zoo
from tests.helpers import REPO
from tests.helpers.tiny_models import (
    RESNET,
    RESNET_FLAGS,
    VIT,
    VIT_FLAGS,
    VIT_KWARGS,
    named_folder,
    tiny_resnet,
    tiny_vit,
)


def prefixed(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def no_head(sd):
    return {k: v for k, v in sd.items() if not k.startswith(("fc.", "head."))}


def mlp():
    return {"fc.0.weight": torch.zeros(8, 512), "fc.0.bias": torch.zeros(8), "fc.2.weight": torch.zeros(4, 8)}


# layout -> (network, file object of its weights sd): each as its writer saves it (docs/zoo.md)
LAYOUTS = {
    "fdsl": ("vit", lambda sd: {"arch": VIT, "state_dict": sd, "version": 2, "epoch": 0, "saver": {},
                                "args": {"model": VIT, "model_kwargs": [f"{k}={v}" for k, v in VIT_KWARGS.items()],
                                         "img_size": 16}}),
    "timm": ("vit", lambda sd: {"epoch": 89, "arch": VIT, "state_dict": sd, "optimizer": {}, "version": 2,
                                "metric": 1.5, "args": argparse.Namespace(model=VIT, input_size=[3, 16, 16])}),
    "deit": ("vit", lambda sd: {"model": sd, "optimizer": {}, "lr_scheduler": {}, "scaler": {}, "epoch": 3}),
    "vissl": ("vit", lambda sd: {"classy_state_dict": {"base_model": {"model": {"trunk": {
        k.replace("cls_token", "class_token").replace("pos_embed", "pos_embedding"): v
        for k, v in no_head(sd).items()}}}}}),
    "state_dict": ("resnet", lambda sd: {"epoch": 90, "state_dict": sd, "optimizer": {}, "scheduler": {}}),
    "plain": ("resnet", lambda sd: prefixed(sd, "module.")),  # nn.DataParallel's names
    "moco": ("resnet", lambda sd: {"epoch": 200, "arch": "resnet50", "optimizer": {}, "state_dict": {
        **prefixed({**no_head(sd), **mlp()}, "module.encoder_q."), **prefixed(no_head(sd), "module.encoder_k."),
        "module.queue": torch.zeros(8, 16)}}),
    "openselfsup": ("resnet", lambda sd: {"meta": {}, "optimizer": {}, "state_dict": {
        **prefixed(no_head(sd), "encoder_q.0."), "encoder_q.1.mlp.0.weight": torch.zeros(8, 512),
        **prefixed(no_head(sd), "encoder_k.0."), **prefixed(no_head(sd), "backbone."), "queue": torch.zeros(8, 4)}}),
    "hpt-backbone": ("resnet", lambda sd: {"state_dict": no_head(sd), "author": "OpenSelfSup"}),
}
NETS = {"vit": (tiny_vit, VIT_FLAGS), "resnet": (tiny_resnet, RESNET_FLAGS)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return named_folder(tmp_path_factory.mktemp("data"))


def build(tmp_path, layout):
    net, make = LAYOUTS[layout]
    model = NETS[net][0](num_classes=5)
    path = tmp_path / f"{layout}.pth"
    torch.save(make(model.state_dict()), path)
    return model, path, NETS[net][1]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_is_read_by_finetune_evaluate_and_export(layout, data, tmp_path, fdsl_cli, one_thread):
    source, path, flags = build(tmp_path, layout)
    weights = released.read(str(path))
    assert weights.layout.name == layout
    headless = "fc.weight" not in weights.state_dict and "head.weight" not in weights.state_dict
    body = {k: v for k, v in source.state_dict().items() if not k.startswith(("fc.", "head."))}

    # finetune.py's loader: a fresh 4-class model gets every backbone tensor of the file
    target = NETS[LAYOUTS[layout][0]][0](num_classes=4, seed=1)
    checkpoint.load_pretrained(target, str(path), flags[1], log=lambda m: None)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in body.items())
    code, out, err = fdsl_cli("finetune", data, *flags, "--pretrained-path", path, "--epochs", "1", "-b", "8",
                              "-j", "0", "--device", "cpu", "--output", tmp_path / "ft", "--cache-images", "off")
    assert code == 0, err
    assert f"layout {layout} (" in out and re.search(r"pretrained: loaded \d+ tensors", out)

    code, out, err = fdsl_cli("export", path, "--out", tmp_path / "exp", *flags)
    assert code == 0, err
    exported = load_file(tmp_path / "exp" / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in body.items())
    assert ("fc.weight" in exported or "head.weight" in exported) != headless
    assert json.loads((tmp_path / "exp" / "config.json").read_text())["num_classes"] == (0 if headless else 5)

    code, out, err = fdsl_cli("evaluate", path, "--data", data, *flags, "-j", "0", "--out", tmp_path / "ev")
    if headless:  # a backbone has no classifier to score: one line saying what to do
        assert code == 2 and "backbone without a classifier" in err and len(err.strip().splitlines()) == 1
    else:
        assert code == 0, err
        assert json.loads((tmp_path / "ev" / "results.json").read_text())["images"] == 16


def test_deepercluster_vgg_is_sent_to_the_vgg_commands(data, tmp_path, fdsl_cli):
    path = tmp_path / "ours.pth"
    torch.save({"epoch": 100, "start_iter": 0, "state_dict": {"module.sobel.0.weight": torch.zeros(1, 3, 1, 1),
                                                              "module.body.features.0.weight": torch.zeros(4, 2, 3, 3)}},
               path)
    assert released.read(str(path)).layout.name == "deepercluster"
    for argv in (["finetune", data, "--pretrained-path", path, "--device", "cpu", "--output", tmp_path],
                 ["evaluate", path, "--data", data], ["export", path, "--out", tmp_path / "x"]):
        code, _, err = fdsl_cli(*argv)
        assert code == 2 and "fdsl eval-linear --pretrained" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_keys_that_fit_no_layout_name_the_nearest(tmp_path, fdsl_cli):
    path = tmp_path / "odd.pth"
    torch.save({"net": tiny_vit().state_dict(), "epoch": 3, "arch": VIT}, path)
    code, _, err = fdsl_cli("export", path, "--out", tmp_path / "x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "nearest is timm" in err and "lacks ['state_dict']" in err and "['net']" in err


def test_weights_of_another_model_name_the_keys_that_differ(tmp_path, fdsl_cli):
    path = tmp_path / "r.pth"
    torch.save({"model": tiny_resnet().state_dict()}, path)
    code, _, err = fdsl_cli("export", path, "--out", tmp_path / "x", *VIT_FLAGS)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "(deit layout) does not fit deit_tiny_patch16_224" in err and "e.g. conv1.weight" in err


def test_a_released_file_name_supplies_its_architecture(tmp_path):
    path = tmp_path / "FractalDB-1000_resnet50_epoch90.pth"
    torch.save(tiny_resnet().state_dict(), path)
    weights = released.read(str(path))
    assert (weights.layout.name, weights.arch, weights.released.paper) == ("plain", RESNET.replace("18", "50"), "accv20")


def test_the_zoo_table_lists_every_released_file_and_layout():
    with open(os.path.join(REPO, "docs", "zoo.md"), encoding="utf-8") as f:
        text = f.read()
    for entry in zoo.RELEASED:
        row = next((line for line in text.splitlines() if f"`{entry.file}`" in line), None)
        assert row is not None, entry.file
        assert entry.arch.split(" ")[0] in row and entry.layout in row, entry.file
    for layout in released.LAYOUTS:
        assert f"`{layout.name}`" in text, layout.name
