"""Images for the clustering tests: tiny images with an orientation (RotNet can learn them) and a colour per
class (clusters can find them), and a VOC2007 devkit in miniature."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from fdsl.eval.voc import CLASSES


def make_oriented(root, classes=4, per_class=8, size=32, seed=0, splits=("",)):
    """Class c: a bright bar along the top edge (thickness by class) on a dark, noisy background, tinted with
    colour c. The bar tells the rotation; colour and thickness tell the class."""
    rng = np.random.default_rng(seed)
    tints = np.array([[1, .2, .2], [.2, 1, .2], [.2, .2, 1], [1, 1, .2], [1, .2, 1], [.2, 1, 1]])
    for split in splits:
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                img = rng.uniform(0, 60, (size, size, 1))
                img[: size // 8 + (c % 3) * size // 16] += 170
                img = np.clip(img * tints[c % len(tints)], 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(folder, f"{i:03d}.png"))
    return str(root)


def make_voc(root, per_split=12, size=32, seed=0):
    """VOC2007 devkit layout: ImageSets/Main/<class>_<split>.txt for train/val/trainval/test, JPEGImages/.
    Image i holds class i % 3 (its tint), difficult for class 3 every 4th image, absent elsewhere."""
    rng = np.random.default_rng(seed)
    main = os.path.join(root, "ImageSets", "Main")
    os.makedirs(main)
    os.makedirs(os.path.join(root, "JPEGImages"))
    ids = {split: [f"{split}{i:04d}" for i in range(per_split)] for split in ("train", "val", "test")}
    ids["trainval"] = ids["train"] + ids["val"]
    tints = np.array([[1, .1, .1], [.1, 1, .1], [.1, .1, 1]])
    for split in ("train", "val", "test"):
        for i, name in enumerate(ids[split]):
            img = np.clip(rng.uniform(60, 255, (size, size, 1)) * tints[i % 3], 0, 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(root, "JPEGImages", f"{name}.jpg"))
    for split, names in ids.items():
        for c, cls in enumerate(CLASSES):
            with open(os.path.join(main, f"{cls}_{split}.txt"), "w") as f:
                for i, name in enumerate(names):
                    i = int(name[-4:])
                    value = 1 if c == i % 3 else (0 if c == 3 and i % 4 == 0 else -1)
                    f.write(f"{name} {value:2d}\n")
    return str(root)
