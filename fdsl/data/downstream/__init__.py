"""Downstream (real-image) data sets read from files the user already has, with no network, and written as
fdsl's fine-tuning reads them (fdsl.data.downstream.prepare). One reader per file format:
idx (MNIST, Fashion-MNIST), cifar (the python archives), imagefolder (any class-folder tree)."""
from __future__ import annotations

from fdsl.data.downstream.source import Source
from fdsl.errors import UserError

NAMES = ("mnist", "fashion-mnist", "cifar10", "cifar100", "folder")


def open_source(name: str, path: str | None, labels: str | None = None) -> Source:
    """The data set ``name`` read from ``path`` (--from; None: the reader's default place)."""
    if name not in NAMES:
        raise UserError(f"unknown data set {name!r}; choose one of: {', '.join(NAMES)}")
    if name in ("mnist", "fashion-mnist"):
        from fdsl.data.downstream.idx import open_idx

        return open_idx(name, path)
    if name in ("cifar10", "cifar100"):
        from fdsl.data.downstream.cifar import open_cifar

        return open_cifar(name, path, labels or "fine")
    from fdsl.data.downstream.imagefolder import open_folder

    return open_folder(path)


def default_source(name: str) -> str | None:
    """Where ``name`` is read from without --from (None: --from is needed)."""
    from fdsl.data.downstream.idx import DEFAULT_DIRS

    return DEFAULT_DIRS.get(name)
