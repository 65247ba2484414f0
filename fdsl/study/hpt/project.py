"""`fdsl hpt project PROJECT.yaml`: every stage config of one HPT study, in a predictable layout.

One YAML holds the dataset (lists or folders, mean/std), the base checkpoints, the iteration budgets and the
evaluation settings (DEFAULTS below documents every key; an unknown key is an error naming the nearest
valid one). The generator writes, under the project folder ROOT (default hpt/<shortname>):

    ROOT/project.yaml                                         the input with every default filled in
    ROOT/configs/pretrain/<base>_basetrain/<N>-iters.yaml     MoCo v2 from <base> for N optimiser steps
    ROOT/configs/pretrain/<base>_basetrain/<N>bn-iters.yaml   HPT-BN (only BatchNorm trains)
    ROOT/configs/pretrain/<base>_basetrain/<N>byol-iters.yaml BYOL
    ROOT/configs/linear-eval/linear-eval-lr-s<k>.yaml         linear probe, seed k (-lr<lr>- when lr is a list)
    ROOT/configs/finetune/<n>-labels/<T>-iter-<lr>-lr-finetune.yaml and <E>-epoch-<lr>-lr-finetune.yaml
    ROOT/lists/<train list>-<n>.txt                           the class-balanced n-label training lists (unless
                                                              <train list>-<n>.txt exists beside the train list)

and `fdsl hpt run ROOT` writes the runs under ROOT/work/ with the same names (see runner.py).

<base> is the checkpoint's file stem (hyphens become underscores: the hyphen separates hierarchy levels),
`no` for random init, and for a backbone pre-trained by another HPT project (its final_backbone.pth, with
the .json written beside it) `<its base>-<its dataset>_<N>it`: base -> source -> target reads back from the
name, e.g. moco_v2_800ep-resisc_50000it_basetrain/.
"""
from __future__ import annotations

import copy
import difflib
import os
import re

import yaml

from fdsl.errors import UserError
from fdsl.ssl.hpt.records import base_name, is_random

DEFAULTS = {
    "shortname": None,  # the target dataset's short name (required)
    "arch": "resnet50",  # backbone: timm name or torchvision:<name>
    "crop_size": 224,
    "test_precrop_size": 256,
    "data": {
        "root": None,  # folder the lists' relative paths start from (base_data_path)
        "pretrain_list": None,  # train+val images for pre-training (labels, if any, are ignored)
        "pretrain_folder": None,  # ... or an image folder
        "pretrain_shards": None,  # ... or webdataset shards '/path/train-{000000..000009}.tar'
        "train_list": None,  # labeled lists `relpath label` (multi-label: comma lists)
        "val_list": None,
        "test_list": None,
        "num_classes": None,  # needed for the evaluation configs
        "class_map": None,  # multi-label value map, e.g. {"1.0": 1, "0.0": 0, "-1.0": 0, "": 0}
        "mean": None,  # per-channel pixel mean in 0-1 (fdsl mean-std FOLDER)
        "std": None,
    },
    "base_weights": [""],  # checkpoints to start from; "" = random init
    "random_init": "auto",  # random init: auto (ResNets as OpenSelfSup, published), openselfsup, model (timm's)
    "published_schedule": True,  # BYOL budget and fine-tune lr drops/evaluations counted as published
    "bt_iters": [50, 500, 5000, 50000],  # budgets (optimiser steps) when starting from a base
    "no_bt_iters": [5000, 50000, 100000, 200000],  # budgets from random init
    "bn_iters": [],  # HPT-BN budgets (from each non-random base), e.g. [5000]
    "methods": ["moco"],  # moco and/or byol
    "pretrain": {},  # any other `fdsl hpt pretrain` option for every pre-training stage (batch_size, lr, ...)
    # lr: one value (published 30), or a list to sweep (the plots then keep the lr with the best val)
    # lr_drops: None = the published 1651, 3333 (scaled when iters is not 5000)
    # reruns: seeds seed .. seed + reruns - 1 (published: 0, 1, 2); a per-seed study sets seed and reruns 1
    "linear": {"iters": 5000, "lr": 30.0, "lr_drops": None, "reruns": 3, "seed": 0, "batch_size": 512,
               "eval_interval": 100, "workers": 8},
    "finetune": {"num_train_labels": [1000, "all"], "lrs": [0.01, 0.001], "by_iter": 2500,
                 "by_iter_lr_steps": [833, 1667], "by_epoch": 90, "by_epoch_lr_steps": [30, 60],
                 "batch_size": 64, "accum_steps": 4, "eval_interval": 25, "head_lr_mult": 100.0,
                 "subset_seed": 0, "workers": 8},
}
METHODS = ("moco", "byol")


def _check_keys(given: dict, defaults: dict, where: str) -> None:
    for key in given:
        if key not in defaults:
            near = difflib.get_close_matches(str(key), list(defaults), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(defaults)}"
            raise UserError(f"{where}: unknown key {key!r}{hint}")


def _merge(given: dict, defaults: dict, where: str) -> dict:
    if not isinstance(given, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {type(given).__name__}")
    _check_keys(given, defaults, where)
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if isinstance(defaults[key], dict) and defaults[key] and value is not None:
            out[key] = _merge(value, defaults[key], f"{where}.{key}")
        else:
            out[key] = value
    return out


def load_project(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"project file {path} does not exist")
    with open(path) as f:
        try:
            given = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise UserError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    project = _merge(given, DEFAULTS, os.path.basename(path))
    validate(project, path)
    return project


def validate(p: dict, path: str) -> None:
    if not p["shortname"] or "-" in str(p["shortname"]) or "/" in str(p["shortname"]):
        raise UserError(f"{path}: shortname is required, without '-' or '/' (e.g. resisc)")
    d = p["data"]
    sources = [k for k in ("pretrain_list", "pretrain_folder", "pretrain_shards") if d[k]]
    if len(sources) != 1:
        raise UserError(f"{path}: give exactly one of data.pretrain_list, data.pretrain_folder, "
                        f"data.pretrain_shards (got {len(sources)})")
    for key in ("mean", "std"):
        if not isinstance(d[key], (list, tuple)) or len(d[key]) not in (1, 3):
            raise UserError(f"{path}: data.{key} must be a list of 3 (or 1) values in 0-1; "
                            f"compute them with `fdsl mean-std FOLDER`")
    bad = [m for m in p["methods"] if m not in METHODS]
    if bad or not p["methods"]:
        raise UserError(f"{path}: methods {bad or '[]'}: choose from {', '.join(METHODS)}")
    from fdsl.ssl.backbone import RANDOM_INITS

    if p["random_init"] not in RANDOM_INITS:
        raise UserError(f"{path}: random_init {p['random_init']!r}: choose one of {', '.join(RANDOM_INITS)}")
    if p["bn_iters"] and all(is_random(w) for w in p["base_weights"]):
        raise UserError(f"{path}: bn_iters (HPT-BN) needs a non-random base in base_weights")
    from fdsl.ssl.hpt.options import PRETRAIN, check_keys

    check_keys(p["pretrain"] or {}, PRETRAIN, f"{path}: pretrain")
    if d["num_classes"] is not None:
        for key in ("train_list", "val_list", "test_list"):
            if not d[key]:
                raise UserError(f"{path}: the evaluation configs need data.{key} (or drop data.num_classes)")


def stage_tag(iters: int, method: str, bn_only: bool) -> str:
    """<N>-iters (MoCo), <N>bn-iters (HPT-BN), <N>byol-iters (BYOL), <N>bnbyol-iters."""
    return f"{iters}{'bn' if bn_only else ''}{'byol' if method == 'byol' else ''}-iters"


def parse_tag(tag: str) -> tuple[int, bool, str]:
    """'5000bnbyol-iters...' -> (5000, True, 'byol'): steps, HPT-BN, method."""
    match = re.match(r"(\d+)(bn)?(byol)?-iters", os.path.basename(tag))
    if not match:
        raise ValueError(f"{tag!r} is not an <N>[bn][byol]-iters name")
    return int(match.group(1)), bool(match.group(2)), "byol" if match.group(3) else "moco"


def lr_tag(lr: float) -> str:
    return f"{lr:g}".replace(".", "_")


def _data_keys(p: dict) -> dict:
    d = p["data"]
    return {"data_root": d["root"], "mean": list(d["mean"]), "std": list(d["std"]), "class_map": d["class_map"],
            "num_classes": d["num_classes"], "crop_size": p["crop_size"], "arch": p["arch"],
            "random_init": p["random_init"], "published_schedule": bool(p["published_schedule"])}


def pretrain_configs(p: dict, root: str) -> dict[str, dict]:
    """{relative config path: config} of every pre-training stage."""
    d = p["data"]
    out = {}
    for weight in p["base_weights"]:
        name = base_name(weight)
        budgets = p["no_bt_iters"] if is_random(weight) else p["bt_iters"]
        stages = [(n, m, False) for m in p["methods"] for n in budgets]
        if not is_random(weight):
            stages += [(n, "moco", True) for n in p["bn_iters"]]
        for iters, method, bn_only in stages:
            tag = stage_tag(iters, method, bn_only)
            rel = f"pretrain/{name}_basetrain/{tag}.yaml"
            cfg = {"method": method, "base": "" if is_random(weight) else os.path.abspath(weight),
                   "base_name": name, "dataset": p["shortname"], "iters": int(iters), "bn_only": bn_only,
                   "train_list": d["pretrain_list"], "train_folder": d["pretrain_folder"],
                   "train_shards": d["pretrain_shards"], "crop_size": p["crop_size"],
                   # published: one checkpoint at N, or at N/2 and N from scratch
                   "checkpoint_interval": int(iters) // (2 if is_random(weight) else 1),
                   "output": os.path.join(root, "work", rel[: -len(".yaml")])}
            cfg.update({k: v for k, v in _data_keys(p).items() if k != "crop_size"})
            if d["train_list"] and d["val_list"]:  # the k-NN probe logged at every checkpoint
                cfg.update({"knn_train_list": d["train_list"], "knn_val_list": d["val_list"],
                            "test_precrop_size": p["test_precrop_size"]})
            cfg.update(p["pretrain"])
            out[rel] = cfg
    return out


PUBLISHED_LINEAR_DROPS = (1651, 3333)  # of the published 5000-step linear eval (pretraining-config-template.sh)


def linear_drops(iters: int) -> list[int]:
    """lr x 0.1 steps of a linear eval of `iters` steps: the published 1651 and 3333 at 5000, scaled with the
    budget otherwise."""
    return [round(iters * d / 5000) for d in PUBLISHED_LINEAR_DROPS]


def linear_name(lr: float, sweep: bool) -> str:
    """linear-eval-lr: the published name (its generator left the lr out), whose variant the published
    plot-results.py selects; an lr sweep names each lr (linear-eval-lr0_3, ...)."""
    return f"linear-eval-lr{lr_tag(lr) if sweep else ''}"


def linear_configs(p: dict) -> dict[str, dict]:
    lin, d = p["linear"], p["data"]
    drops = lin["lr_drops"] or linear_drops(lin["iters"])
    out = {}
    lrs = lin["lr"] if isinstance(lin["lr"], list) else [lin["lr"]]
    for lr in lrs:
        for seed in range(int(lin["seed"]), int(lin["seed"]) + int(lin["reruns"])):
            cfg = _data_keys(p)
            cfg.update({"protocol": "linear", "train_list": d["train_list"], "val_list": d["val_list"],
                        "test_list": d["test_list"], "test_precrop_size": p["test_precrop_size"],
                        "iters": lin["iters"], "lr": lr, "lr_steps": drops, "by": "iter",
                        "batch_size": lin["batch_size"], "accum_steps": 1, "eval_interval": lin["eval_interval"],
                        "momentum": 0.9, "weight_decay": 0.0, "head_lr_mult": 1.0, "seed": seed,
                        "workers": lin["workers"]})
            out[f"linear-eval/{linear_name(lr, len(lrs) > 1)}-s{seed}.yaml"] = cfg
    return out


def finetune_configs(p: dict, root: str) -> dict[str, dict]:
    ft, d = p["finetune"], p["data"]
    out = {}
    for n in ft["num_train_labels"]:
        train = d["train_list"] if str(n) == "all" else subset_list(d["train_list"], n, root)
        schedules = [("iter", ft["by_iter"], ft["by_iter_lr_steps"], ft["eval_interval"])] if ft["by_iter"] else []
        if ft["by_epoch"]:
            schedules.append(("epoch", ft["by_epoch"], ft["by_epoch_lr_steps"], 1))
        for by, length, steps, interval in schedules:
            for lr in ft["lrs"]:
                cfg = _data_keys(p)
                cfg.update({"protocol": "finetune", "train_list": train, "val_list": d["val_list"],
                            "test_list": d["test_list"], "test_precrop_size": p["test_precrop_size"],
                            "by": by, "iters": length if by == "iter" else None,
                            "epochs": length if by == "epoch" else None, "lr": lr, "lr_steps": list(steps),
                            "batch_size": ft["batch_size"], "accum_steps": ft["accum_steps"],
                            "eval_interval": interval, "momentum": 0.9, "weight_decay": 0.0,
                            "head_lr_mult": ft["head_lr_mult"], "seed": 0, "workers": ft["workers"]})
                out[f"finetune/{n}-labels/{length}-{by}-{lr_tag(lr)}-lr-finetune.yaml"] = cfg
    return out


def subset_list(train_list: str, n, root: str) -> str:
    """The n-label training list: the published `<train list>-<n>.txt` beside the train list when the user
    has it (the published generator required it), else fdsl's class-balanced one under ROOT/lists/."""
    from fdsl.data.image_list import subset_path

    beside = subset_path(train_list, int(n))
    return beside if os.path.isfile(beside) else os.path.join(root, "lists", _subset_name(train_list, n))


def _subset_name(train_list: str, n) -> str:
    from fdsl.data.image_list import subset_path

    return os.path.basename(subset_path(train_list, int(n)))


def write_yaml_atomic(obj, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(obj, f, sort_keys=False)
    os.replace(tmp, path)


def generate(project_path: str, root: str | None = None, overwrite: bool = False, log=print) -> str:
    """Write every stage config of the project; returns ROOT. Existing configs are kept unless overwrite."""
    p = load_project(project_path)
    root = os.path.abspath(root or os.path.join("hpt", p["shortname"]))
    d = p["data"]
    for key in ("root",):
        if d[key] and not os.path.isdir(d[key]):
            raise UserError(f"data.{key} {d[key]} is not a folder")
    if d["root"]:
        for key in ("pretrain_list", "train_list", "val_list", "test_list"):
            if d[key] and not os.path.isabs(d[key]):
                d[key] = os.path.join(d["root"], d[key])
    for key in ("pretrain_list", "train_list", "val_list", "test_list"):
        if d[key] and not os.path.isfile(d[key]):
            raise UserError(f"data.{key} {d[key]} does not exist")
    configs = {**pretrain_configs(p, root)}
    if d["num_classes"] is not None:
        configs.update(linear_configs(p))
        configs.update(finetune_configs(p, root))
        _write_subsets(p, root, log)
    written = kept = 0
    for rel, cfg in configs.items():
        path = os.path.join(root, "configs", rel)
        if os.path.isfile(path) and not overwrite:
            kept += 1
            continue
        write_yaml_atomic(cfg, path)
        written += 1
    write_yaml_atomic(p, os.path.join(root, "project.yaml"))
    log(f"hpt project {p['shortname']}: {written} configs written, {kept} kept (--overwrite to rewrite) "
        f"under {os.path.join(root, 'configs')}")
    return root


def _write_subsets(p: dict, root: str, log) -> None:
    from fdsl.data.image_list import balanced_subset

    d, ft = p["data"], p["finetune"]
    for n in ft["num_train_labels"]:
        if str(n) == "all":
            continue
        out = subset_list(d["train_list"], n, root)
        if not os.path.isfile(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            balanced_subset(d["train_list"], int(n), ft["subset_seed"], out)
            log(f"wrote the {n}-label list {out}")
