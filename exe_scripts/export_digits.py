"""Export scikit-learn's digits (shipped with scikit-learn, no download) to an image folder:
OUT/train/<digit>/*.png (first 1,000 images) and OUT/val/<digit>/*.png (the other 797), upsampled to SIZE px."""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

TRAIN_IMAGES = 1000


def export(out: str, size: int = 32) -> None:
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    for i, (img, label) in enumerate(zip(images, digits.target)):
        split = "train" if i < TRAIN_IMAGES else "val"
        folder = os.path.join(out, split, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(img).resize((size, size), Image.BICUBIC).save(os.path.join(folder, f"{i:04d}.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    export(args.out, args.size)
    print(f"digits: {TRAIN_IMAGES} train / {1797 - TRAIN_IMAGES} val images in {args.out}")


if __name__ == "__main__":
    main()
