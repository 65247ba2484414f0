"""Export scikit-learn's digits (shipped with scikit-learn, no download) to an image folder:
OUT/train/<digit>/*.png (from the first 1,000 images) and OUT/val/<digit>/*.png (the other 797), upsampled to
SIZE px. --train-per-class N keeps only the first N training images of each digit (the test set is unchanged).
--select writes, as OUT/val, the training images that --train-per-class left out instead of the 797 test images:
a validation split for choosing a recipe without ever looking at the images a report quotes."""
from __future__ import annotations

import argparse
import os
import shutil

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

TRAIN_IMAGES = 1000


def export(out: str, size: int = 32, train_per_class: int | None = None, select: bool = False) -> tuple[int, int]:
    for split in ("train", "val"):  # a re-export replaces the previous one (possibly of another size)
        shutil.rmtree(os.path.join(out, split), ignore_errors=True)
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    kept = {"train": 0, "val": 0}
    per_class = dict.fromkeys(range(10), 0)
    if select and train_per_class is None:
        raise SystemExit("error: --select needs --train-per-class N (the held-out training images form the split)")
    for i, (img, label) in enumerate(zip(images, digits.target)):
        split = "train" if i < TRAIN_IMAGES else "val"
        if split == "train":
            per_class[label] += 1
            if train_per_class is not None and per_class[label] > train_per_class:
                if not select:
                    continue
                split = "val"
        elif select:
            continue
        folder = os.path.join(out, split, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(img).resize((size, size), Image.BICUBIC).save(os.path.join(folder, f"{i:04d}.png"))
        kept[split] += 1
    return kept["train"], kept["val"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-per-class", type=int, default=None, help="training images per digit (default all)")
    parser.add_argument("--select", action="store_true",
                        help="val = the training images left out by --train-per-class, not the test images")
    args = parser.parse_args()
    train, val = export(args.out, args.size, args.train_per_class, args.select)
    kind = "selection (held-out training images)" if args.select else "test"
    print(f"digits: {train} train / {val} {kind} images in {args.out}")


if __name__ == "__main__":
    main()
