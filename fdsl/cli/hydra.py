"""The hydra-style command line of VisualAtom's finetune.py and 1p-frac's main.py (docs/training.md):
`data=colorimagefolder data.baseinfo.num_classes=10 ckpt=... model=vit model.arch.model_name=... epochs=...
mode=finetune output_dir=...`, mapped onto the same engine with the published configs' defaults.

Differences from Hydra 1.0 (fixes of D17/D19): the working directory is not changed, so relative paths mean
what they say; an unknown key is one error naming the nearest valid keys; `*.pth.tar` checkpoints load;
`step_per_epoch=false` gives a per-iteration cosine instead of a crash; wandb follows WANDB_MODE (offline by
default). Hydra itself is not required.
"""
from __future__ import annotations

import copy
import difflib
import os
import re

import yaml

from fdsl.cli import args as cli_args
from fdsl.errors import UserError

MISSING = "???"
OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w.-]*=")

MAIN = {
    "seed": 42, "epochs": 300, "ckpt": None, "resume": None, "mode": MISSING, "output_dir": MISSING,
    "freez_layer": 1, "freeze": False,
    "logger": {"entity": "YOUR_WANDB_ENTITY_NAME", "project": "YOUR_WANDB_PPOJECT_NAME",
               "group": "YOUR_WANDB_GROUP_NAME", "experiment": "YOUR_EXPERIMENT_NAME",
               "print_iter_freq": 100, "save_epoch_freq": 50},
    "dist": {"backend": "nccl", "local_rank": 0},
    "gaus_filter": {"use": False, "prob": 0.5},
}

COLOR = {
    "baseinfo": {"name": MISSING, "train_imgs": MISSING, "val_imgs": -1, "num_classes": MISSING},
    "trainset": {"root": MISSING},
    "valset": {"root": None},
    "transform": {"input_size": 224, "scale": [0.08, 1.0], "ratio": [0.75, 1.3333], "no_aug": False, "hflip": 0.5,
                  "vflip": 0.0, "color_jitter": 0.4, "auto_augment": "rand-m9-mstd0.5-inc1",
                  "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "re_prob": 0.25, "re_mode": "pixel", "re_count": 1},
    "loader": {"batch_size": 64, "num_workers": 10, "pin_memory": True},
    "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "cutmix_minmax": None, "prob": 1.0, "switch_prob": 0.5,
              "mode": "batch", "label_smoothing": 0.1},
    "gaus_filter": {"use": False},
}
GRAY = copy.deepcopy(COLOR)
GRAY["transform"].update(no_aug=True, scale=[1, 1], ratio=[1, 1], hflip=0.0, vflip=0.0, color_jitter=0.0, re_prob=0.0,
                         mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
GRAY["loader"]["batch_size"] = 3
GRAY["mixup"].update(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0, switch_prob=0.0)
GRAY["random_noise"] = {"category": 1000, "image_size": 512, "dim": 1, "name": MISSING}
DATA_GROUPS = {"colorimagefolder": COLOR, "grayimagefolder": GRAY}


def _model(name, lr=5e-4, wd=0.05, warmup=5, min_lr=1e-5, warmup_lr=1e-6, clip=None, drop_path=0.1, cooldown=0,
           eps=None):
    optim = {"optimizer_name": "adamw", "learning_rate": lr, "weight_decay": wd}
    if eps is not None:
        optim["eps"] = eps
    return {
        "arch": {"model_name": name, "pretrained": False, "drop_rate": 0.0, "drop_path_rate": drop_path},
        "optim": optim,
        "scheduler": {"args": {"epochs": None, "sched": "cosine", "lr_cycle_mul": 1.0, "min_lr": min_lr,
                               "decay_rate": 0.1, "warmup_lr": warmup_lr, "warmup_epochs": warmup,
                               "warmup_steps": 5000, "lr_cycle_limit": 1, "seed": None, "cooldown_epochs": cooldown,
                               "step_per_epoch": True}},
        "scaler": {"clip_grad": clip, "clip_mode": "norm"},
    }


MODEL_GROUPS = {
    "vit": _model("vit_tiny_patch16_224"),
    "swin": _model("swin_tiny_patch4_window7_224", warmup=20, min_lr=5e-6, warmup_lr=5e-7, clip=5.0, drop_path=0.2,
                   cooldown=10),
    "mixer": _model("mixer_s16_224", warmup=20, min_lr=5e-6, warmup_lr=5e-7, clip=5.0, drop_path=0.0, cooldown=10),
    "resnet": _model("resnet50", clip=1.0, drop_path=0.0, cooldown=10, eps=1e-6),
    "pvt_v2": _model("pvt_v2_b0", wd=1e-3),
}
REQUIRED = ("mode", "output_dir", "data.baseinfo.num_classes", "data.trainset.root")


def is_hydra(argv: list[str]) -> bool:
    """key=value tokens and no --flags (`--model-kwargs k=v` is an argparse command line)."""
    return any(OVERRIDE.match(a) for a in argv) and not any(a.startswith("-") for a in argv)


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_value(text: str):
    value = yaml.safe_load(text) if text != "" else ""
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as a string
        except ValueError:
            return value
    return value


def parse_overrides(argv: list[str]) -> dict:
    overrides = {}
    for token in argv:
        if not OVERRIDE.match(token):
            raise UserError(f"{token!r}: hydra-style command lines take only key=value overrides; "
                            "do not mix them with --flags")
        key, _, value = token.partition("=")
        overrides[key.lstrip("~")] = parse_value(value)
    return overrides


def compose(overrides: dict) -> dict:
    """The flattened config: main.yaml + the chosen data and model groups + overrides, checked key by key."""
    data_group = overrides.pop("data", MISSING)
    model_group = overrides.pop("model", MISSING)
    for label, choice, groups in (("data", data_group, DATA_GROUPS), ("model", model_group, MODEL_GROUPS)):
        if choice == MISSING:
            raise UserError(f"missing {label}=...; choose one of: {', '.join(groups)}")
        if choice not in groups:
            raise UserError(f"{label}={choice} is not a config group; choose one of: {', '.join(groups)}")
    config = flatten(MAIN)
    config.update(flatten(DATA_GROUPS[data_group], "data."))
    config.update(flatten(MODEL_GROUPS[model_group], "model."))
    config["data"], config["model"] = data_group, model_group
    for key, value in overrides.items():
        name = key.lstrip("+")
        if name.startswith("hydra."):
            continue  # Hydra's own settings (run dir, logging) have no meaning here
        if name not in config:
            if key.startswith("+model.arch."):  # Hydra passes extra arch keys to timm.create_model
                config[name] = value
                continue
            if key.startswith("+"):
                print(f"note: {key} is not used by fdsl; ignored")
                continue
            near = difflib.get_close_matches(name, sorted(config), n=3, cutoff=0.5)
            raise UserError(f"unknown key {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                            + f" (data={data_group}, model={model_group})")
        config[name] = value
    missing = [k for k in REQUIRED if config.get(k) == MISSING]
    if missing:
        raise UserError(f"missing mandatory key(s): {', '.join(k + '=...' for k in missing)}")
    return config


def to_args(argv: list[str]):
    """An argparse Namespace of the finetune parser, filled from the composed hydra config."""
    c = compose(parse_overrides(argv))
    finetune = c["mode"] == "finetune"
    if "3d-ofdb" in str(c["data.baseinfo.name"]):
        raise UserError("data.baseinfo.name containing '3d-ofdb' selects 1p-frac's one-sample-per-folder "
                        "dataset, which fdsl does not support; render 3D-OFDB views into class folders instead")
    args = cli_args.parse("finetune", [])
    a = {
        "kind": "finetune" if finetune else "pretrain",
        "train_dir": c["data.trainset.root"], "val_dir": c["data.valset.root"] if finetune else None,
        "num_classes": int(c["data.baseinfo.num_classes"]),
        "batch_size": int(c["data.loader.batch_size"]), "workers": int(c["data.loader.num_workers"]),
        "pin_mem": bool(c["data.loader.pin_memory"]),
        "img_size": int(c["data.transform.input_size"]), "scale": list(c["data.transform.scale"]),
        "ratio": list(c["data.transform.ratio"]), "no_aug": bool(c["data.transform.no_aug"]),
        "hflip": float(c["data.transform.hflip"]), "vflip": float(c["data.transform.vflip"]),
        "color_jitter": float(c["data.transform.color_jitter"]), "aa": c["data.transform.auto_augment"],
        "train_interpolation": c["data.transform.interpolation"], "interpolation": c["data.transform.interpolation"],
        "mean": list(c["data.transform.mean"]), "std": list(c["data.transform.std"]),
        "reprob": float(c["data.transform.re_prob"]), "remode": c["data.transform.re_mode"],
        "recount": int(c["data.transform.re_count"]), "crop_pct": 0.875,  # torchvision-style Resize(256)+Crop(224)
        "mixup": float(c["data.mixup.mixup_alpha"]), "cutmix": float(c["data.mixup.cutmix_alpha"]),
        "cutmix_minmax": c["data.mixup.cutmix_minmax"], "mixup_prob": float(c["data.mixup.prob"]),
        "mixup_switch_prob": float(c["data.mixup.switch_prob"]), "mixup_mode": c["data.mixup.mode"],
        "smoothing": float(c["data.mixup.label_smoothing"]),
        "model": c["model.arch.model_name"], "pretrained": bool(c["model.arch.pretrained"]),
        "drop": float(c["model.arch.drop_rate"]), "drop_path": float(c["model.arch.drop_path_rate"]),
        "opt": c["model.optim.optimizer_name"], "lr": float(c["model.optim.learning_rate"]),
        "weight_decay": float(c["model.optim.weight_decay"]), "opt_eps": c.get("model.optim.eps"),
        "sched": _sched(c), "min_lr": float(c["model.scheduler.args.min_lr"]),
        "warmup_lr": float(c["model.scheduler.args.warmup_lr"]),
        "warmup_epochs": int(c["model.scheduler.args.warmup_epochs"]),
        "decay_rate": float(c["model.scheduler.args.decay_rate"]),
        "lr_cycle_mul": float(c["model.scheduler.args.lr_cycle_mul"]),
        "lr_cycle_limit": int(c["model.scheduler.args.lr_cycle_limit"]),
        "cooldown_epochs": 0,  # the published loop ignores the configs' cooldown_epochs
        "clip_grad": c["model.scaler.clip_grad"], "clip_mode": c["model.scaler.clip_mode"],
        "sync_bn": c["model"] == "resnet", "lr_scale_batch": 512, "amp": True,
        "epochs": int(c["epochs"]), "seed": max(int(c["seed"]), 0),
        "resume": c["resume"] or "", "pretrained_path": (c["ckpt"] or "") if finetune else "",
        "eval_metric": "top1" if finetune else "loss",
        "run_dir": c["output_dir"], "experiment": os.path.basename(os.path.normpath(c["output_dir"])),
        "log_wandb": True, "entity_name": c["logger.entity"], "project_name": c["logger.project"],
        "group_name": c["logger.group"], "log_interval": int(c["logger.print_iter_freq"]),
        "interval_saved_epochs": int(c["logger.save_epoch_freq"]),
    }
    standard = set(flatten(MODEL_GROUPS["vit"]["arch"], "model.arch."))
    a["model_kwargs"] = [f"{k[len('model.arch.'):]}={v}" for k, v in c.items()
                         if k.startswith("model.arch.") and k not in standard]
    vars(args).update(a)
    args.hydra_config = {k: v for k, v in c.items() if v is None or isinstance(v, (str, int, float, bool, list))}
    return args


def _sched(c: dict) -> str:
    name = c["model.scheduler.args.sched"]
    if not c["model.scheduler.args.step_per_epoch"] and name in ("cosine", "linear"):
        return name + "_iter"
    return name
