"""`fdsl preview DIR --out grid.png`: a contact sheet of a few classes of a built database."""
from __future__ import annotations

import argparse
import glob
import os
import tarfile
from collections import defaultdict

import cv2
import numpy as np

from fdsl.cli.common import Parser
from fdsl.data import writers
from fdsl.data.naming import IMAGE_EXTENSIONS, natural_key
from fdsl.errors import UserError


def folder_samples(root: str, classes: int, per_class: int) -> list[list[bytes]]:
    """Up to ``per_class`` encoded images from ``classes`` leaf folders spread over the database."""
    by_folder = defaultdict(list)
    for directory, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not writers.is_temporary(name):
                by_folder[directory].append(name)
    folders = sorted(by_folder, key=natural_key)
    picked = [folders[i] for i in _spread(len(folders), classes)]
    rows = []
    for folder in picked:
        names = sorted(by_folder[folder], key=natural_key)[:per_class]
        rows.append([_read(os.path.join(folder, n)) for n in names])
    return rows


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def shard_samples(shards: list[str], classes: int, per_class: int) -> list[list[bytes]]:
    by_label = defaultdict(list)
    for shard in shards:
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, member in members.items():
                key, _, ext = name.partition(".")
                if ext in ("png", "jpg", "jpeg") and f"{key}.cls" in members:
                    label = int(tar.extractfile(members[f"{key}.cls"]).read())
                    if len(by_label[label]) < per_class:
                        by_label[label].append(tar.extractfile(member).read())
    labels = sorted(by_label)
    return [by_label[labels[i]] for i in _spread(len(labels), classes)]


def _spread(count: int, wanted: int) -> list[int]:
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)}) if wanted > 1 else [0]


def contact_sheet(rows: list[list[bytes]], tile: int) -> np.ndarray:
    """Rows of images (one row per class) as one BGR image with 2-px gray gutters."""
    columns = max(len(r) for r in rows)
    gap = 2
    sheet = np.full((len(rows) * (tile + gap) + gap, columns * (tile + gap) + gap, 3), 64, np.uint8)
    for r, row in enumerate(rows):
        for c, data in enumerate(row):
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            image = cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)
            y, x = gap + r * (tile + gap), gap + c * (tile + gap)
            sheet[y:y + tile, x:x + tile] = image
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="fdsl preview", description=__doc__.split(":", 1)[1].strip(),
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("root", help="a database built by `fdsl render` (PNG folders or shards)")
    parser.add_argument("--out", default=None, help="output PNG (default <root>/preview.png)")
    parser.add_argument("--classes", type=int, default=8, help="classes (rows), spread over the database")
    parser.add_argument("--per-class", type=int, default=6, help="images per class (columns)")
    parser.add_argument("--tile", type=int, default=128, help="tile size in pixels")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        raise UserError(f"{args.root} is not a folder; give the --out folder of `fdsl render`")
    if args.classes < 1 or args.per_class < 1 or args.tile < 8:
        raise UserError("--classes and --per-class must be >= 1 and --tile >= 8")
    shards = sorted(glob.glob(os.path.join(args.root, "*.tar")))
    rows = (shard_samples(shards, args.classes, args.per_class) if shards
            else folder_samples(args.root, args.classes, args.per_class))
    if not rows:
        raise UserError(f"{args.root} holds no images or shards; build it with `fdsl render` first")
    if all(len(row) == 1 for row in rows):  # one image per class (1p-frac, OFDB): wrap into a grid
        flat = [row[0] for row in rows]
        width = int(np.ceil(np.sqrt(len(flat))))
        rows = [flat[i:i + width] for i in range(0, len(flat), width)]
    out = args.out or os.path.join(args.root, "preview.png")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _, data = cv2.imencode(".png", contact_sheet(rows, args.tile))
    writers.atomic_write(out, data.tobytes())
    print(f"preview of {sum(map(len, rows))} images -> {out}")
    return 0
