"""Shared helpers of the export / evaluate / zoo-layout tests: tiny timm models and a named image folder."""
from __future__ import annotations

import json
import os

import numpy as np
import timm
import torch
from PIL import Image

VIT = "deit_tiny_patch16_224"
VIT_KWARGS = {"patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
VIT_FLAGS = ["--model", VIT, "--model-kwargs", *(f"{k}={v}" for k, v in VIT_KWARGS.items()), "--img-size", "16"]
RESNET = "resnet18"
RESNET_FLAGS = ["--model", RESNET, "--model-kwargs", "layers=[1,1,1,1]", "--img-size", "32"]
NAMES = ("cat", "dog", "eel", "fox")


def tiny_vit(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(VIT, num_classes=num_classes, img_size=16, **VIT_KWARGS).eval()


def tiny_resnet(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(RESNET, num_classes=num_classes, layers=[1, 1, 1, 1]).eval()


def named_folder(root, names=NAMES, per_class: int = 4, splits=("train", "val"), size: int = 16, seed: int = 0):
    """Class i is a solid colour (channel i % 3) plus noise, in a folder named names[i]."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for i, name in enumerate(names):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for k in range(per_class):
                img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                img[..., i % 3] += np.uint8(120 + 60 * (i // 3))
                Image.fromarray(img).save(os.path.join(folder, f"{k:03d}.png"))
    return str(root)


def write_manifest(root, database: str = "fractaldb", classes: int = 4) -> None:
    """The manifest.json `fdsl render` writes at a database's root (only the fields the model card reads)."""
    manifest = {"database": database, "options": {"size": 16, "iterations": 1000}, "num_classes": classes,
                "num_instances": 4, "format": "png"}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)
