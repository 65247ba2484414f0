"""`fdsl export`: model.safetensors + timm's config.json + a model card, loaded by timm and by finetune.py."""
import json
import struct

import pytest
import timm
import torch
from safetensors.torch import load_file

from tests.helpers.tiny_models import NAMES, VIT, VIT_FLAGS, VIT_KWARGS, named_folder, write_manifest

RECIPE = ["--mean", "0.5", "0.4", "0.3", "--std", "0.2", "0.25", "0.3", "--interpolation", "bilinear",
          "--crop-pct", "0.8", "--lr", "0.003", "--epochs", "1", "-b", "8", "-j", "0", "--device", "cpu",
          "--cache-images", "off", "--seed", "7"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """1 epoch of fdsl pre-training on a 4-class database (with its manifest), 1 epoch of fine-tuning from it on
    a named folder, and the export of the fine-tuned checkpoint."""
    from fdsl.cli.main import main

    root = tmp_path_factory.mktemp("export")
    db, data = named_folder(root / "db", names=("0", "1", "2", "3")), named_folder(root / "ft-data")
    write_manifest(db)
    common = ["--epochs", "1", "-b", "8", "-j", "0", "--device", "cpu", "--cache-images", "off", "--output", str(root)]
    assert main(["pretrain", db, *VIT_FLAGS, *common, "--experiment", "pre"]) == 0
    assert main(["finetune", data, *VIT_FLAGS, *RECIPE, "--pretrained-path", str(root / "pre" / "last.pth.tar"),
                 "--output", str(root), "--experiment", "ft"]) == 0
    ckpt = root / "ft" / "last.pth.tar"
    assert main(["export", str(ckpt), "--out", str(root / "fractal-vit")]) == 0
    return {"root": root, "data": data, "ckpt": ckpt, "out": root / "fractal-vit"}


def fdsl_model(ckpt):
    model = timm.create_model(VIT, num_classes=4, img_size=16, **VIT_KWARGS).eval()
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    return model


def test_files_are_weights_only_and_the_config_is_timms(run):
    out = run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])  # safetensors: a JSON header, no pickle
    assert header["__metadata__"] == {"format": "pt"} and "blocks.0.attn.qkv.weight" in header
    sd = torch.load(run["ckpt"], weights_only=True)["state_dict"]
    assert all(torch.equal(v, sd[k]) for k, v in load_file(out / "model.safetensors").items())
    config = json.loads((out / "config.json").read_text())
    assert (config["architecture"], config["num_classes"], config["label_names"]) == (VIT, 4, list(NAMES))
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 16, 16] and cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == 0.8
    assert cfg["mean"] == pytest.approx([0.5, 0.4, 0.3]) and cfg["std"] == pytest.approx([0.2, 0.25, 0.3])
    assert "tag" not in cfg and "license" not in cfg  # timm's own ImageNet weights' tag is not ours
    assert config["model_args"]["depth"] == 1 and config["fdsl"]["layout"] == "fdsl"


def test_timm_loads_the_export(run, one_thread):
    out, x = run["out"], torch.randn(2, 3, 16, 16)
    expected = fdsl_model(run["ckpt"])(x)
    local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert torch.allclose(local(x), expected, atol=1e-6)
    assert local.pretrained_cfg["mean"] == pytest.approx([0.5, 0.4, 0.3])
    overlay = timm.create_model(VIT, pretrained=True, num_classes=4, img_size=16, **VIT_KWARGS,
                                pretrained_cfg_overlay={"file": str(out / "model.safetensors"), "num_classes": 4})
    assert torch.allclose(overlay.eval()(x), expected, atol=1e-6)
    new_head = timm.create_model(VIT, pretrained=True, num_classes=10, img_size=16, **VIT_KWARGS,
                                 pretrained_cfg_overlay={"file": str(out / "model.safetensors")})
    assert torch.equal(new_head.blocks[0].mlp.fc1.weight, local.blocks[0].mlp.fc1.weight)


def test_finetune_starts_from_the_exported_folder(run, fdsl_cli):
    code, out, err = fdsl_cli("finetune", run["data"], *VIT_FLAGS, "--pretrained-path", run["out"], *RECIPE,
                              "--output", run["root"], "--experiment", "from-export")
    assert code == 0, err
    assert "layout timm-hf" in out and "missing []; unexpected []" in out


def test_model_card_says_what_fdsl_knows(run):
    card = (run["out"] / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n")
    assert "| pre-training database | fractaldb, options `{\"size\": 16, \"iterations\": 1000}`" in card
    assert f"| fine-tuned on | `{run['data']}` |" in card
    assert "eval_top1" in card and "| classes | 4 (label names in config.json) |" in card
    assert "- lr: 0.003" in card and "- epochs: 1" in card
    command = next(line for line in card.splitlines() if line.startswith("fdsl finetune "))
    assert f"--model {VIT}" in command and "--lr 0.003" in command and "--seed 7" in command
    assert f"--pretrained-path {run['root']}" in command
    assert "--batch-size 32" not in command and "--output" not in command  # defaults and run places left out
    assert "Kataoka et al., Pre-training without Natural Images, ACCV 2020" in card
    assert f'timm.create_model("local-dir:{run["out"].name}", pretrained=True)' in card


def test_export_of_the_ema_and_bad_input_is_one_line(run, tmp_path, fdsl_cli):
    for argv, message in (
            ([run["ckpt"], "--out", tmp_path / "e", "--ema"], "holds no EMA weights"),
            ([tmp_path / "missing.pth", "--out", tmp_path / "m"], "does not exist"),
            ([run["ckpt"], "--out", run["ckpt"]], "is a file"),
            ([run["ckpt"], "--out", tmp_path / "l", "--labels-from", tmp_path], "has 0 class folders")):
        code, _, err = fdsl_cli("export", *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_push_to_hub_offline_keeps_the_folder(run, tmp_path, fdsl_cli, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user's own setting: fdsl must not lift it
    code, _out, err = fdsl_cli("export", run["ckpt"], "--out", tmp_path / "p", "--push-to-hub", "me/model")
    assert code == 2 and "--push-to-hub me/model" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "p" / "model.safetensors").is_file()
