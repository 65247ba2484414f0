"""Rendered test images and a PNG folder of them, for the image reader, the cache and the batch augmentation."""
import random

import numpy as np
import torch

from fdsl.data import png, registry

# timm's DeiT training transform, the reference of the reader's crop and of --gpu-augment
DEIT = {"is_training": True, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "color_jitter": 0.4,
        "interpolation": "bicubic"}


def rendered(name: str, size: int = 32) -> np.ndarray:
    db = registry.create(name, classes=1, size=size, seed=0)
    return next(iter(db.render(0, db.class_params(0), [0])))


def seed_all(seed: int) -> None:
    """timm's transforms draw from python's random, numpy's global generator (RandAugment's ops) and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write(path, image: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png.encode(image))
    return path


def cached_folder(tmp_path, count=8, size=32):
    paths = []
    for i in range(count):
        paths.append(str(write(tmp_path / f"c{i % 2}" / f"{i}.png", rendered("rcdb", size) // (i + 1))))
    return paths
