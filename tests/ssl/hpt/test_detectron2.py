"""The detectron2 detection configs of the HPT transfer experiments (configs/detectron2/) and their launcher,
checked without detectron2 (not on PyPI): each config parses with its _BASE_ chain, has the keys of the
R50-C4 SyncBN setup, pixel statistics in detectron2's 0-255 scale, and a WEIGHTS file that
`fdsl hpt detectron2` writes with the names detectron2's ResNet expects."""
from __future__ import annotations

import ast
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

ROOT = Path(__file__).resolve().parents[3]  # tests/ssl/hpt/ -> the repository
CONFIGS = ROOT / "configs" / "detectron2"
EXPERIMENTS = {"voc07_R_50_C4_24k.yaml": (24000, (18000, 22000), ("voc_2007_trainval", "voc_2012_trainval"),
                                          ("voc_2007_test",)),
               "coco_R_50_C4_1x.yaml": (90000, (60000, 80000), ("coco_2017_train",), ("coco_2017_val",)),
               "coco_R_50_C4_2x.yaml": (180000, (120000, 160000), ("coco_2017_train",), ("coco_2017_val",))}

pytestmark = pytest.mark.usefixtures("one_thread")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(name: str) -> dict:
    """A config with its _BASE_ files merged in, as detectron2's get_cfg().merge_from_file does."""
    cfg = yaml.safe_load((CONFIGS / name).read_text())
    base = cfg.pop("_BASE_", None)
    return _merge(load(base), cfg) if base else cfg


def _tuple(value):
    return ast.literal_eval(value) if isinstance(value, str) else tuple(value)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_config_is_the_r50_c4_syncbn_transfer(name):
    cfg = load(name)
    model, solver = cfg["MODEL"], cfg["SOLVER"]
    assert model["META_ARCHITECTURE"] == "GeneralizedRCNN" and model["RESNETS"]["DEPTH"] == 50
    assert model["RESNETS"]["NORM"] == "SyncBN" and model["RESNETS"]["STRIDE_IN_1X1"] is False
    assert model["BACKBONE"]["FREEZE_AT"] == 0 and model["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
    assert cfg["TEST"]["PRECISE_BN"]["ENABLED"] is True and cfg["INPUT"]["FORMAT"] == "RGB"
    max_iter, steps, train, test = EXPERIMENTS[name]
    assert (solver["MAX_ITER"], _tuple(solver["STEPS"])) == (max_iter, steps) and steps[-1] < max_iter
    assert (solver["IMS_PER_BATCH"], solver["BASE_LR"]) == (8, 0.01)
    assert (_tuple(cfg["DATASETS"]["TRAIN"]), _tuple(cfg["DATASETS"]["TEST"])) == (train, test)
    sizes = _tuple(cfg["INPUT"]["MIN_SIZE_TRAIN"])
    assert all(isinstance(s, int) for s in sizes) and max(sizes) == cfg["INPUT"]["MIN_SIZE_TEST"] == 800
    if name.startswith("voc"):
        assert model["ROI_HEADS"]["NUM_CLASSES"] == 20 and model["MASK_ON"] is False
    # 0-255 scale: the ImageNet statistics fdsl uses in 0-1, times 255
    from fdsl.ssl.hpt.options import PROBE

    for key, ref in (("PIXEL_MEAN", PROBE["mean"][0]), ("PIXEL_STD", PROBE["std"][0])):
        assert len(model[key]) == 3 and all(1 < v < 255 for v in model[key])
        assert model[key] == pytest.approx([255 * v for v in ref], abs=1e-3)


# INPUT of the configs the published HPT runs (README.md:250: "the config with the `_moco` suffix"), their
# _BASE_ chains merged by hand from cjrd/self-supervised-pretraining at 84e27bd,
# OpenSelfSup/benchmarks/detection/configs/: coco_R_50_C4_2x_moco.yaml:9 sets MAX_SIZE_TRAIN 1200 over
# coco_R_50_C4_2x.yaml:6-7; pascal_voc_R_50_C4_24k(_moco).yaml set none, so detectron2's default 1333
# (detectron2/config/defaults.py:55) applies.
DETECTRON2_MAX_SIZE_TRAIN = 1333
PUBLISHED_INPUT = {"voc07_R_50_C4_24k.yaml": ((480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800), 800, 1333),
                   "coco_R_50_C4_1x.yaml": ((640, 672, 704, 736, 768, 800), 800, 1200),
                   "coco_R_50_C4_2x.yaml": ((640, 672, 704, 736, 768, 800), 800, 1200)}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_image_sizes_are_the_published_moco_configs(name):
    """MAX_SIZE_TRAIN caps the long side of a training image: it changes COCO AP, so it must be published."""
    inputs = load(name)["INPUT"]
    got = (_tuple(inputs["MIN_SIZE_TRAIN"]), inputs["MIN_SIZE_TEST"],
           inputs.get("MAX_SIZE_TRAIN", DETECTRON2_MAX_SIZE_TRAIN))
    assert got == PUBLISHED_INPUT[name]


def test_weights_are_the_file_fdsl_hpt_detectron2_writes(tmp_path, fdsl_cli):
    weights = load("voc07_R_50_C4_24k.yaml")["MODEL"]["WEIGHTS"]
    assert weights.endswith(".pkl")  # detectron2 reads a .pkl {model, __author__} with matching heuristics
    torch.manual_seed(0)
    body = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": body}, tmp_path / "final_backbone.pth")
    code, _, err = fdsl_cli("hpt", "detectron2", tmp_path / "final_backbone.pth", tmp_path / weights)
    assert code == 0, err
    with open(tmp_path / weights, "rb") as f:
        d2 = pickle.load(f)
    assert d2["matching_heuristics"] is True and len(d2["model"]) == 318
    names = set(d2["model"])
    assert {"stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.weight",
            "res4.5.conv3.norm.bias", "res5.2.conv2.weight", "res5.0.shortcut.norm.weight"} <= names
    assert all(k.split(".")[0] in ("stem", "res2", "res3", "res4", "res5") for k in names)


def test_launcher_converts_the_backbone_and_passes_it(tmp_path):
    torch.save({"state_dict": torchvision.models.resnet18().state_dict()}, tmp_path / "final_backbone.pth")
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable, PYTHONPATH=str(ROOT), NGPUS="2",
               MEAN="0.5", STD="0.2 0.1 0.4")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "hpt_detectron2.sh"),
                          str(CONFIGS / "voc07_R_50_C4_24k.yaml"), str(tmp_path / "final_backbone.pth"),
                          "SOLVER.IMS_PER_BATCH", "16"], env=env, capture_output=True, text=True, check=True).stdout
    assert (tmp_path / "final_backbone_detectron2.pkl").is_file()
    cmd = shlex.split(out.strip().splitlines()[-1])
    assert cmd[cmd.index("--config-file") + 1].endswith("voc07_R_50_C4_24k.yaml") and "--num-gpus" in cmd
    opts = dict(zip(cmd[cmd.index("--num-gpus") + 2::2], cmd[cmd.index("--num-gpus") + 3::2]))
    assert opts == {"MODEL.WEIGHTS": str(tmp_path / "final_backbone_detectron2.pkl"),
                    "OUTPUT_DIR": "output/detectron2/voc07_R_50_C4_24k",
                    "MODEL.PIXEL_MEAN": "[127.5000, 127.5000, 127.5000]",
                    "MODEL.PIXEL_STD": "[51.0000, 25.5000, 102.0000]", "SOLVER.IMS_PER_BATCH": "16"}
    assert cmd[cmd.index("--num-gpus") + 1] == "2"


def test_train_script_says_detectron2_is_missing_in_one_line():
    try:
        import detectron2  # noqa: F401
        pytest.skip("detectron2 is installed")
    except ImportError:
        pass
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "hpt_detectron2_train.py")], check=False,
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().startswith("error: detectron2 is not installed")
    assert len(done.stderr.strip().splitlines()) == 1
