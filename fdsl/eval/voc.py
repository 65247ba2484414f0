"""Pascal VOC 2007 multi-label classification (docs/ssl.md): the devkit reader, the masked BCE loss and
mean AP (difficult images excluded per class), and the fc6-8 / all-layers transfer model.

Labels per image and class: 1 present, 0 absent, 255 difficult (ignored by the loss and by the AP), read
from ImageSets/Main/<class>_<split>.txt (1, -1, 0). The published reader also shuffled its image list once
at construction; here the loader's sampler shuffles, so evaluation order is the file order.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from fdsl.errors import UserError

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
DIFFICULT = 255
TIE_EPS = 1e-5


def find_devkit(root: str) -> str:
    """The folder holding ImageSets/ and JPEGImages/: root itself or root/VOC2007 (or VOCdevkit/VOC2007)."""
    for candidate in (root, os.path.join(root, "VOC2007"), os.path.join(root, "VOCdevkit", "VOC2007")):
        if os.path.isdir(os.path.join(candidate, "ImageSets", "Main")):
            return candidate
    raise UserError(f"{root} has no ImageSets/Main (the VOC devkit layout: ImageSets/Main/<class>_<split>.txt "
                    "and JPEGImages/); pass the VOC2007 folder as --data_path")


def read_split(root: str, split: str) -> tuple[list[str], np.ndarray]:
    """(image ids, labels [N, 20] uint8) of ImageSets/Main/<class>_<split>.txt."""
    main = os.path.join(find_devkit(root), "ImageSets", "Main")
    files = sorted(f for f in os.listdir(main) if f.endswith(f"_{split}.txt"))
    if len(files) != len(CLASSES):
        raise UserError(f"{main} has {len(files)} files *_{split}.txt; VOC2007 needs one per class ({len(CLASSES)})")
    ids: list[str] | None = None
    labels = None
    for c, name in enumerate(CLASSES):
        path = os.path.join(main, f"{name}_{split}.txt")
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing")
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        if ids is None:
            ids = [r[0] for r in rows]
            labels = np.zeros((len(ids), len(CLASSES)), np.uint8)
        elif [r[0] for r in rows] != ids:
            raise UserError(f"{path} lists other images than {CLASSES[0]}_{split}.txt")
        raw = np.array([int(r[1]) for r in rows])
        labels[:, c] = np.where(raw == 1, 1, np.where(raw == 0, DIFFICULT, 0))
    return ids, labels


class VOC2007(Dataset):
    def __init__(self, root: str, split: str, transform=None):
        self.root = find_devkit(root)
        self.ids, self.labels = read_split(root, split)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        with Image.open(os.path.join(self.root, "JPEGImages", f"{self.ids[i]}.jpg")) as img:
            img = img.convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, torch.from_numpy(self.labels[i].astype(np.int64))


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits over present/absent labels (difficult ones count 0), summed over classes, / batch size."""
    mask = (labels != DIFFICULT).float()
    target = (labels == 1).float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (loss * mask).sum() / logits.shape[0]


def voc_map(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
    """Mean AP in % and the per-class APs; difficult images excluded per class; ties broken against
    positives (score - eps * gt), as published."""
    from sklearn.metrics import average_precision_score

    aps = []
    for c in range(labels.shape[1]):
        keep = labels[:, c] != DIFFICULT
        gt = labels[keep, c] == 1
        if not gt.any():
            continue
        aps.append(100.0 * average_precision_score(gt, scores[keep, c] - TIE_EPS * gt))
    return (float(np.mean(aps)) if aps else 0.0), aps


class VOCClassifier(nn.Module):
    """A VGG16-BN (relu=True) body with a new fc8 (4096 -> 20); fc6..fc8 re-initialised N(0, 0.01), bias 0.1.
    With fc6_8 the conv features are frozen; in both modes BatchNorm keeps its global statistics."""

    def __init__(self, net, num_classes: int = len(CLASSES), fc6_8: bool = True):
        super().__init__()
        self.net = net
        self.fc8 = nn.Linear(net.num_features, num_classes)
        for m in list(net.body.classifier.modules()) + [self.fc8]:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 0.1)
        if fc6_8:
            for p in net.body.features.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.body.features.eval()  # BN always uses its running statistics (published)
        return self

    def forward(self, x):
        return self.fc8(self.net(x))
