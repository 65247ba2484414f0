"""Any image folder: DIR/<class>/<image>, or one already split into DIR/train/<class>/... and DIR/test/...
(DIR/val/ or DIR/validation/ stand for the test split when there is no DIR/test/). Classes are found as
fdsl's training loader finds them (fdsl.data.folder.scan: leaf folders, natural order)."""
from __future__ import annotations

import os

import numpy as np

from fdsl.data.downstream.source import FileSplit, Source
from fdsl.data.folder import scan
from fdsl.errors import UserError

TEST_NAMES = ("test", "val", "validation")  # the first one present is the test split


def split_roots(root: str) -> dict[str, str]:
    """{"train": folder, "test": folder (when split)}."""
    if not os.path.isdir(os.path.join(root, "train")):
        return {"train": root}
    roots = {"train": os.path.join(root, "train")}
    for name in TEST_NAMES:
        if os.path.isdir(os.path.join(root, name)):
            roots["test"] = os.path.join(root, name)
            break
    return roots


def open_folder(root: str | None) -> Source:
    if not root:
        raise UserError("folder needs --from DIR, an image folder (DIR/<class>/*.png, or DIR/train/ and DIR/test/)")
    roots = split_roots(root)
    samples, classes = scan(roots["train"])
    if "" in classes:
        raise UserError(f"{roots['train']} has images outside class folders; expected {roots['train']}/<class>/<image>")
    splits = {"train": FileSplit([p for p, _ in samples], np.array([c for _, c in samples], np.int64))}
    if "test" in roots:
        test, _ = scan(roots["test"], classes)
        splits["test"] = FileSplit([p for p, _ in test], np.array([c for _, c in test], np.int64))
    return Source(classes, splits, [os.path.abspath(r) for r in roots.values()], keep_names=True)
