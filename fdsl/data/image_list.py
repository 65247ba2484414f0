"""Image lists (docs/hpt.md): one image per line, relative to a root folder.

    relpath                 unlabeled (pre-training)
    relpath 7               single label, an integer class
    relpath 1.0,,0.0,-1.0   multi-label: one value per class, comma separated, mapped through a class map
                            (CheXpert: {"1.0": 1, "0.0": 0, "-1.0": 0, "": 0}); the target is a float vector

Every listed file must exist: a list naming missing files is one error naming the first few, before any
training starts. Labels are ignored where a method needs none, so a labeled list also pre-trains.
`balanced_subset` writes the N-label training lists of the low-label fine-tuning protocol.
"""
from __future__ import annotations

import os
import random

import torch

from fdsl.data.folder import BadFiles, ImageFolder
from fdsl.errors import UserError


def _parse_label(token: str):
    """int for a single label, list[str] for a multi-label field, None if the token is not a label."""
    if "," in token:
        return token.split(",")
    try:
        return int(token)
    except ValueError:
        return None


def read_list(path: str, root: str | None = None, class_map: dict | None = None,
              check_files: bool = True) -> tuple[list[tuple[str, object]], bool, list[str]]:
    """(samples [(absolute path, label or None)], multi_label, raw lines) of an image list."""
    if not os.path.isfile(path):
        raise UserError(f"image list {path} does not exist")
    root = root if root is not None else os.path.dirname(os.path.abspath(path))
    samples, lines = [], []
    multi = None
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            head, _, tail = line.rpartition(" ")
            label = _parse_label(tail) if head else None
            rel = head if label is not None else line.strip()
            if label is not None:
                is_multi = isinstance(label, list)
                if multi is not None and is_multi != multi:
                    raise UserError(f"{path}:{number}: mixes single labels and comma-separated multi-labels")
                multi = is_multi
                if is_multi:
                    label = _map_values(label, class_map, path, number)
            samples.append((os.path.join(root, rel.strip()), label))
            lines.append(line)
    if not samples:
        raise UserError(f"image list {path} is empty")
    if check_files:
        missing = [(i, p) for i, (p, _) in enumerate(samples) if not os.path.isfile(p)]
        if missing:
            shown = ", ".join(p for _, p in missing[:3])
            raise UserError(f"image list {path} names {len(missing)} missing file(s), e.g. {shown}; "
                            f"check the list's root folder ({root})")
    return samples, bool(multi), lines


def _map_key(key) -> object:
    """Class-map keys compare as numbers when they are numbers ("1", "1.0" and 1.0 are one key), "" or None
    is the blank field."""
    if key is None or str(key).strip() == "":
        return ""
    text = str(key).strip()
    return float(text) if _is_float(text) else text


def _map_values(values: list[str], class_map: dict | None, path: str, number: int) -> list[float]:
    out = []
    table = {_map_key(k): v for k, v in class_map.items()} if class_map is not None else None
    for v in values:
        v = v.strip()
        if table is not None:
            key = _map_key(v)
            if key not in table:
                raise UserError(f"{path}:{number}: value {v!r} is not in the class map {sorted(map(str, table))}")
            out.append(float(table[key]))
        elif not v:
            out.append(0.0)
        elif _is_float(v):
            out.append(float(v))
        else:
            raise UserError(f"{path}:{number}: label value {v!r} is not a number")
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class ImageList(ImageFolder):
    """An ImageFolder whose samples come from a list file (same skipping of unreadable images).
    Targets: int class, float multi-hot vector, or -1 for unlabeled lines."""

    def __init__(self, list_path: str, root: str | None = None, transform=None, class_map: dict | None = None,
                 num_classes: int | None = None):
        samples, self.multi_label, _ = read_list(list_path, root, class_map)
        self.root = root or os.path.dirname(os.path.abspath(list_path))
        self.list_path = list_path
        self.transform = transform
        self.bad_files = BadFiles()
        labels = [t for _, t in samples if t is not None]
        if self.multi_label:
            widths = {len(t) for t in labels}
            if len(widths) != 1:
                raise UserError(f"{list_path}: multi-label lines have different numbers of values {sorted(widths)}")
            found = widths.pop()
            self.samples = [(p, torch.tensor(t if t is not None else [0.0] * found)) for p, t in samples]
        else:
            found = max(labels) + 1 if labels else 0
            self.samples = [(p, t if t is not None else -1) for p, t in samples]
        if num_classes is not None and num_classes < found:
            raise UserError(f"{list_path} has {found} classes, more than num_classes {num_classes}")
        self.num_classes = num_classes or found
        self.labeled = bool(labels)
        self.classes = [str(c) for c in range(self.num_classes)]


def subset_path(train_list: str, n: int) -> str:
    """train-labeled.txt -> train-labeled-1000.txt (the published naming of the N-label lists)."""
    stem = train_list.removesuffix(".txt")
    return f"{stem}-{n}.txt"


def balanced_subset(train_list: str, n: int, seed: int = 0, out: str | None = None) -> str:
    """Write an N-image subset of a labeled list, class-balanced and a pure function of (list, n, seed):
    classes take turns (in a seeded order) drawing their next image from a seeded shuffle of their own
    images, so every class gets floor or ceil of N / C images (fewer only if it runs out). Multi-label lines
    count for their first positive class (lines without one form their own group). The lines keep their
    order in the original list. Returns the path written."""
    samples, multi, lines = read_list(train_list, check_files=False)
    if any(label is None for _, label in samples):
        raise UserError(f"{train_list} has unlabeled lines; a label subset needs `relpath label` lines")
    if n >= len(lines):
        raise UserError(f"--n {n}: {train_list} has only {len(lines)} images")
    groups: dict[object, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        key = next((c for c, v in enumerate(label) if v > 0), -1) if multi else label
        groups.setdefault(key, []).append(i)
    rng = random.Random(seed)
    order = sorted(groups, key=lambda k: (str(type(k)), k))
    for key in order:
        rng.shuffle(groups[key])
    rng.shuffle(order)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n:
        for key in order:
            if depth < len(groups[key]) and len(chosen) < n:
                chosen.append(groups[key][depth])
        depth += 1
    out = out or subset_path(train_list, n)
    tmp = f"{out}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.writelines(lines[i] + "\n" for i in sorted(chosen))
    os.replace(tmp, out)
    return out
