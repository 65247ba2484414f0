"""CIFAR-10 and CIFAR-100 from the "python version" archives (cifar-10-python.tar.gz, cifar-100-python.tar.gz),
or from the folder they unpack to.

Format (Krizhevsky, https://www.cs.toronto.edu/~kriz/cifar.html): each batch is a pickled dict whose "data" is
an N x 3072 uint8 array, a row being the 1024 red, then green, then blue values of a 32 x 32 image in row-major
order; "labels" (CIFAR-10) or "fine_labels" / "coarse_labels" (CIFAR-100) are lists of N ints. The label names
are in batches.meta ("label_names") or meta ("fine_label_names", "coarse_label_names"). The pickles were written
by Python 2: strings load as latin-1 (numpy needs that for the array bytes) and keys may be str or bytes.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from fdsl.data.downstream.source import ArraySplit, Source
from fdsl.errors import UserError

LAYOUTS = {  # name -> (archive, folder inside it, training batches, test batch, meta file)
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                "test_batch", "batches.meta"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], "test", "meta"),
}
# the only globals a CIFAR pickle names: a numpy array's reconstruction (and, in Python 3 pickles, bytes)
ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class DataUnpickler(pickle.Unpickler):
    """Loads the arrays and lists of a CIFAR batch and refuses anything else: the file is data, never code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does")
        return super().find_class(module, name)


def load_pickle(data: bytes, where: str) -> dict:
    try:
        obj = DataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - a damaged pickle raises many kinds; each is one user-facing line
        raise UserError(f"{where} is not a readable CIFAR pickle ({type(err).__name__}: {err}); the archive is "
                        "damaged, copy it again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} holds a {type(obj).__name__}, not a CIFAR batch dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in obj.items()}


def find_archive(name: str, path: str | None) -> str:
    """The archive file, or the folder holding the unpacked batches."""
    archive, folder = LAYOUTS[name][:2]
    if not path:
        raise UserError(f"{name} needs --from, the {archive} archive (or the folder holding it)")
    if os.path.isfile(path):
        return path
    candidates = [os.path.join(path, archive), os.path.join(path, folder), path]
    for candidate in candidates:
        if os.path.isfile(candidate) or os.path.isfile(os.path.join(candidate, LAYOUTS[name][4])):
            return candidate
    raise UserError(f"--from {path}: no {archive} and no unpacked {folder}/ there; pass the archive or its folder")


def read_members(name: str, where: str) -> dict[str, bytes]:
    """{file name: bytes} of the batch and meta files, from the archive or the unpacked folder."""
    wanted = set(LAYOUTS[name][2]) | set(LAYOUTS[name][3:5])
    if os.path.isdir(where):
        found = {}
        for member in wanted & set(os.listdir(where)):
            with open(os.path.join(where, member), "rb") as handle:
                found[member] = handle.read()
    else:
        try:
            with tarfile.open(where, "r:*") as tar:
                found = {os.path.basename(m.name): tar.extractfile(m).read()
                         for m in tar if m.isfile() and os.path.basename(m.name) in wanted}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
            raise UserError(f"{where} is truncated or not a tar archive ({err}); copy it again") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}: not the {LAYOUTS[name][0]} archive, or cut short")
    return found


def batch(members: dict[str, bytes], member: str, label_key: str, classes: int, where: str):
    """(N x 32 x 32 x 3 uint8 images, N labels) of one batch."""
    d = load_pickle(members[member], f"{where}: {member}")
    try:
        data, labels = np.asarray(d["data"]), np.asarray(d[label_key], np.int64)
    except KeyError as err:
        raise UserError(f"{where}: {member} has no {err} entry; is it a {'CIFAR-100' if classes == 100 else 'CIFAR-10'} "
                        "batch?") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{where}: {member} holds data {data.dtype} {data.shape} and {len(labels)} labels, not "
                        "N x 3072 uint8 and N labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise UserError(f"{where}: {member} has label {labels.max()}; expected 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def open_cifar(name: str, path: str | None, labels: str = "fine") -> Source:
    """``name`` ("cifar10" or "cifar100") from its archive; CIFAR-100 with ``labels`` "fine" or "coarse"."""
    where = find_archive(name, path)
    members = read_members(name, where)
    _, _, train_batches, test_batch, meta_name = LAYOUTS[name]
    names_key, label_key = ("label_names", "labels") if name == "cifar10" else \
        (f"{labels}_label_names", f"{labels}_labels")
    meta = load_pickle(members[meta_name], f"{where}: {meta_name}")
    if names_key not in meta:
        raise UserError(f"{where}: {meta_name} has no {names_key}; is it the {LAYOUTS[name][0]} archive?")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    parts = [batch(members, member, label_key, len(classes), where) for member in train_batches]
    train = ArraySplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = ArraySplit(*batch(members, test_batch, label_key, len(classes), where))
    return Source(classes, {"train": train, "test": test}, [os.path.abspath(where)])
