"""Writing a downstream data set as fdsl reads it: OUT/{train,val,test}/<class>/<index>.png (or .jpg, copied
from an image folder), or webdataset shards OUT/<split>/SHARDS-000000.tar (<key>.png + <key>.cls), plus
OUT/classes.txt and OUT/manifest.json.

Everything is written into a temporary sibling folder that is renamed to OUT at the end, so OUT is either
absent or complete. The manifest records the options; a re-run with the same options finds OUT done, and a
run with other options is refused rather than mixing two data sets in one folder.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass

import numpy as np

from fdsl import __version__
from fdsl.data import png, writers
from fdsl.data.downstream.source import ArraySplit, Source
from fdsl.errors import UserError

MANIFEST = "manifest.json"
CLASSES = "classes.txt"
SHARD_PATTERN = "SHARDS-{:06d}.tar"  # the name fdsl render --format wds gives its shards


@dataclass(frozen=True)
class Options:
    """What decides the output; a finished OUT is reused only when these are equal."""
    name: str
    source: str  # --from as an absolute path, or the default folder read
    format: str = "png"  # "png" or "wds"
    per_class: int | None = None
    val_from_train: int = 0
    seed: int = 0
    labels: str | None = None  # CIFAR-100: "fine" or "coarse"
    shard_size: int | None = None  # samples per shard, --format wds only


def select(labels: np.ndarray, folders: list[str], per_class: int | None, val_per_class: int, seed: int):
    """(training indices, validation indices), both sorted. Per class, a permutation seeded by (seed, class)
    gives val its first K images and train the next N (all the rest without --per-class): for one seed the
    val images do not depend on N, and the training subsets for growing N are nested."""
    if per_class is None and not val_per_class:
        return np.arange(len(labels)), np.arange(0)
    train, val = [], []
    for c, folder in enumerate(folders):
        members = np.flatnonzero(labels == c)
        need = val_per_class + (per_class or 1)
        if len(members) < need:
            asked = " + ".join(part for part in (f"--per-class {per_class}" if per_class else "",
                                                 f"--val-from-train {val_per_class}" if val_per_class else "") if part)
            raise UserError(f"class {folder} has {len(members)} training images; {asked} needs {need}: lower "
                            f"{'them' if per_class and val_per_class else 'it'}")
        order = np.random.default_rng([seed, c]).permutation(members)
        val.append(order[:val_per_class])
        train.append(order[val_per_class:val_per_class + per_class] if per_class else order[val_per_class:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def plan_splits(source: Source, opts: Options) -> dict[str, tuple]:
    """{split name: (source split, indices)} in the order written; val/ only with --val-from-train."""
    train = source.splits["train"]
    train_idx, val_idx = select(train.labels, source.folder_names(), opts.per_class, opts.val_from_train, opts.seed)
    plan = {"train": (train, train_idx)}
    if len(val_idx):
        plan["val"] = (train, val_idx)
    if "test" in source.splits:
        test = source.splits["test"]
        plan["test"] = (test, np.arange(len(test.labels)))
    return plan


def write_folder(root: str, split, indices: np.ndarray, folders: list[str]) -> None:
    width = len(str(max(len(split.labels) - 1, 1)))
    made = set()
    for i in indices:
        data, ext = split.encoded(i)
        directory = os.path.join(root, folders[split.labels[i]])
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)
        with open(os.path.join(directory, f"{i:0{width}d}.{ext}"), "wb") as handle:
            handle.write(data)


def write_shards(root: str, split, indices: np.ndarray, shard_size: int, name: str) -> int:
    """Shards of ``shard_size`` samples in the given order; returns how many."""
    os.makedirs(root)
    count = 0
    for count, start in enumerate(range(0, len(indices), shard_size), 1):
        samples = []
        for i in indices[start:start + shard_size]:
            data, ext = split.encoded(i)
            samples.append((f"{name}_{i:06d}", {ext: data, "cls": str(int(split.labels[i])).encode()}))
        with open(os.path.join(root, SHARD_PATTERN.format(count - 1)), "wb") as handle:
            handle.write(writers.tar_bytes(samples))
    return count


def manifest(source: Source, opts: Options, plan: dict, shards: dict) -> dict:
    folders = source.folder_names()
    counts = {split: np.bincount(s.labels[idx], minlength=len(folders)).tolist() for split, (s, idx) in plan.items()}
    encoder = png.describe() if isinstance(source.splits["train"], ArraySplit) else "files copied unchanged"
    return {"dataset": opts.name, "options": asdict(opts), "source_files": source.files, "fdsl_version": __version__,
            "encoding": encoder, "classes": [{"index": i, "folder": f, "label": label}
                                           for i, (f, label) in enumerate(zip(folders, source.classes))],
            "counts_per_class": counts, "counts": {split: sum(c) for split, c in counts.items()},
            **({"shards": shards} if shards else {}),
            "note": "val/ is held out of the training images (choose recipes on it); test/ is the data set's own "
                    "test split: report on it once, never choose anything on it"}


def finished(out: str, opts: Options) -> dict | None:
    """The manifest of a finished OUT with these options, None when OUT is absent or empty; else UserError."""
    if not os.path.exists(out):
        return None
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        if os.path.isdir(out) and not os.listdir(out):
            return None
        raise UserError(f"{out} exists and is not a prepared data set; choose another --out or remove it")
    try:
        with open(path, encoding="utf-8") as handle:
            done = json.load(handle)
    except (OSError, ValueError):
        done = None
    if not isinstance(done, dict) or not isinstance(done.get("options"), dict) or "dataset" not in done:
        raise UserError(f"{out} has a {MANIFEST} that fdsl data prepare did not write; choose another --out")
    wanted = asdict(opts)
    differ = [f"{key} {done['options'].get(key)!r} (now {value!r})" for key, value in wanted.items()
              if done["options"].get(key) != value]
    if differ:
        raise UserError(f"{out} was prepared with other options: {'; '.join(differ)}; choose another --out or "
                        "remove it")
    return done


def remove_stale_temporaries(out: str) -> None:
    """Remove the temporary folders that killed runs on this host left beside OUT."""
    mine = os.path.basename(writers.temporary_name(out))  # .<name>.tmp<pid>.<host>
    prefix, suffix = mine.split(f"tmp{os.getpid()}.", 1)
    prefix += "tmp"
    parent = os.path.dirname(out)
    for entry in os.listdir(parent):
        pid = entry[len(prefix):-len(suffix) - 1] if entry.startswith(prefix) and entry.endswith("." + suffix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def prepare(source: Source, opts: Options, out: str) -> dict:
    """Write ``source`` to ``out`` (see the module docstring); returns the manifest."""
    plan = plan_splits(source, opts)  # a --per-class too large for a class fails here, before any file
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    remove_stale_temporaries(out)
    tmp = writers.temporary_name(out)
    folders, shards = source.folder_names(), {}
    try:
        os.makedirs(tmp)
        for split_name, (split, indices) in plan.items():
            root = os.path.join(tmp, split_name)
            if opts.format == "png":
                write_folder(root, split, indices, folders)
            else:  # training shards in a seeded random order: the shard reader shuffles only within a buffer
                order = np.random.default_rng(opts.seed).permutation(indices) if split_name == "train" else indices
                shards[split_name] = write_shards(root, split, order, opts.shard_size, split_name)
        done = manifest(source, opts, plan, shards)
        with open(os.path.join(tmp, CLASSES), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{f}\n" for f in folders))
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(done, handle, indent=2)
            handle.write("\n")
        try:
            os.replace(tmp, out)  # OUT is absent or an empty folder (fdsl.cli.data checked with finished())
        except OSError as err:
            raise UserError(f"cannot move the finished data set to {out} ({err}); another run may have written "
                            "it meanwhile: re-run the command to check") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return done

