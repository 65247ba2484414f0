"""Checkpoint layouts: where the weights sit in the files that fdsl, timm, the papers' repositories and the
self-supervised codebases write, and how their names become timm's. The one reader behind finetune's
--pretrained-path, `fdsl evaluate` and `fdsl export` (docs/zoo.md lists the released files and their layouts).

A layout is the wrapper key that holds the weights, the keys its writer puts beside them, and the prefix its
weight names carry. A file whose keys fit no layout is one error naming the nearest layout and the keys that
differ. Directories and `.safetensors` files are the timm / Hugging Face layout that `fdsl export` writes.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field

import torch

from fdsl.checkpoint_io import load
from fdsl.engine import zoo
from fdsl.errors import UserError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Layout:
    name: str
    wrapper: str | None  # top-level key holding the weights; None: the file is the state dict
    marks: tuple[str, ...] = ()  # top-level keys the writer always puts beside the weights
    signature: tuple[str, ...] = ()  # weight-name prefixes of which one must occur (none: any names)
    strip: tuple[str, ...] = ("module.", "_orig_mod.")  # removed from weight names, the first that matches
    keep_only_stripped: bool = False  # weights without a `strip` prefix are another network (momentum encoder)
    headless: bool = False  # a backbone: no classifier for any label set
    timm: bool = True  # loads into a timm model (DeeperCluster's VGG16 does not)
    writers: str = ""


SSL_ONLY = {"keep_only_stripped": True, "headless": True}
# Most specific first: the self-supervised layouts are known by their weight names (fdsl's own MoCo, BYOL and
# DeeperCluster runs too), the supervised ones by the keys beside the weights.
LAYOUTS = (
    Layout("moco", "state_dict", signature=("module.encoder_q.",), strip=("module.encoder_q.",), **SSL_ONLY,
           writers="MoCo v2 (facebookresearch/moco): HPT's base moco_v2_*ep_pretrain.pth.tar"),
    Layout("openselfsup", "state_dict", signature=("encoder_q.0.", "online_net.0.", "backbone."),
           strip=("encoder_q.0.", "online_net.0.", "backbone."), **SSL_ONLY,
           writers="OpenSelfSup MoCo/BYOL epoch_N.pth (HPT), fdsl hpt pretrain checkpoints"),
    Layout("deepercluster", "state_dict",
           signature=("module.body.", "module.sobel.", "body.features.", "trunk.body.", "features.module."),
           headless=True, timm=False, writers="DeeperCluster / DeepCluster / RotNet VGG16 (ours.pth, rotnet_*.pth)"),
    Layout("hpt-backbone", "state_dict", ("author",), headless=True,
           writers="extract_backbone_weights.py / fdsl hpt extract: final_backbone.pth"),
    Layout("fdsl", "state_dict", ("arch", "args", "saver"), writers="fdsl pretrain/finetune *.pth.tar"),
    Layout("timm", "state_dict", ("arch", "epoch"),
           writers="timm train.py's CheckpointSaver: CVPR22, VisualAtom, 21k OFDB *.pth.tar"),
    Layout("state_dict", "state_dict", writers="{'state_dict': ...}: FractalDB-ResNet checkpoint.pth.tar"),
    Layout("deit", "model", writers="DeiT / hydra main.py {'model': ...}: FractalDB-ViT, 1k OFDB, 1p-frac *.pth"),
    Layout("vissl", "classy_state_dict", writers="VISSL *.torch (read by the OFDB / 1p-frac fine-tuning)"),
    Layout("plain", None, writers="a bare state dict: FractalDB-ResNet *_epoch90.pth, torchvision/timm .pth"),
    Layout("timm-hf", None, writers="fdsl export, timm save_for_hf: DIR/model.safetensors + config.json"),
)
BY_NAME = {layout.name: layout for layout in LAYOUTS}
CLASSIFIER_PREFIXES = ("fc.", "head.", "classifier.", "head_dist.")


@dataclass
class Weights:
    """A checkpoint read: the model's weights under timm names, and what the file says about them."""

    path: str
    layout: Layout
    state_dict: dict
    arch: str | None = None
    args: dict = field(default_factory=dict)  # training args (fdsl, timm); {} when the file has none
    config: dict = field(default_factory=dict)  # config.json of the timm / Hugging Face layout
    released: zoo.Released | None = None  # the released file this is a copy of (by name)
    epoch: int | None = None
    metric: float | None = None

    def describe(self) -> str:
        return f"layout {self.layout.name} ({self.layout.writers})"


def _is_weights(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _plain_args(args) -> dict:
    if isinstance(args, argparse.Namespace):
        return vars(args)
    return dict(args) if isinstance(args, dict) else {}


def _top_keys(layout: Layout) -> set:
    return {layout.wrapper, *layout.marks} - {None}


def _no_layout(path: str, keys: set) -> UserError:
    candidates = [layout for layout in LAYOUTS if layout.wrapper]
    nearest = max(candidates, key=lambda lay: len(_top_keys(lay) & keys) / len(_top_keys(lay) | keys))
    want = _top_keys(nearest)
    return UserError(f"{path}: its keys fit no checkpoint layout fdsl reads; nearest is {nearest.name} "
                     f"({nearest.writers}), which has {sorted(want)}: this file lacks {sorted(want - keys)} and "
                     f"has {sorted(keys - want)[:8]} instead (docs/zoo.md lists the layouts)")


def detect(ckpt, path: str = "checkpoint") -> Layout:
    """The layout of a loaded checkpoint object (a dict)."""
    if _is_weights(ckpt):
        return BY_NAME["plain"]
    keys = set(ckpt) if isinstance(ckpt, dict) else set()
    for layout in LAYOUTS:
        if layout.wrapper is None or layout.wrapper not in keys or not set(layout.marks) <= keys:
            continue
        inner = ckpt[layout.wrapper]
        if layout.name == "vissl" or not isinstance(inner, dict):
            if layout.name == "vissl":
                return layout
            continue
        names = list(inner)
        if layout.signature and not any(n.startswith(layout.signature) for n in names):
            continue
        return layout
    raise _no_layout(path, keys)


def _vissl_trunk(ckpt) -> dict:
    trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
    return {k.replace("class_token", "cls_token").replace("pos_embedding", "pos_embed"): v for k, v in trunk.items()}


def _strip(sd: dict, layout: Layout) -> dict:
    out = {}
    for name, value in sd.items():
        prefix = next((p for p in layout.strip if name.startswith(p)), None)
        if prefix is None and layout.keep_only_stripped:
            continue  # the momentum encoder, the queue, the neck: not the backbone
        out[name[len(prefix):] if prefix else name] = value
    if layout.headless and layout.timm:  # SSL projection MLPs sit where a timm classifier would
        out = {k: v for k, v in out.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    return out


def _weights_of(ckpt, layout: Layout, path: str, use_ema: bool) -> dict:
    if layout.name == "vissl":
        sd = _vissl_trunk(ckpt)
    elif layout.wrapper is None:
        sd = ckpt
    else:
        key = "state_dict_ema" if use_ema and "state_dict_ema" in ckpt else layout.wrapper
        if use_ema and key != "state_dict_ema":
            raise UserError(f"--ema: {path} holds no EMA weights (state_dict_ema); drop --ema")
        sd = ckpt[key]
    if not _is_weights(sd):
        raise UserError(f"{path} ({layout.name} layout) holds no tensors under {layout.wrapper!r}")
    return _strip(sd, layout)


def _read_exported(path: str) -> Weights:
    """A timm / Hugging Face directory (or one of its weight files) with config.json beside the weights."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    weights = path
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in WEIGHT_FILES if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise UserError(f"{path} is a directory without {' or '.join(WEIGHT_FILES)}; pass a checkpoint file "
                            "or a directory written by `fdsl export`")
        weights = found[0]
    if weights.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(weights, device="cpu")
    else:
        sd = load(weights)
    config = {}
    if os.path.isfile(os.path.join(folder, "config.json")):
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    layout = BY_NAME["timm-hf"]
    card = config.get("fdsl", {})
    return Weights(path, layout, _strip(sd, layout), arch=config.get("architecture"), args=card.get("args", {}),
                   config=config, released=zoo.released_file(card.get("source", "")))


def read(path: str, use_ema: bool = False) -> Weights:
    """The weights of any checkpoint fdsl reads (file or exported directory), under timm's names."""
    if os.path.isdir(path) or path.endswith(".safetensors") or os.path.basename(path) in WEIGHT_FILES:
        if not os.path.exists(path):
            raise UserError(f"checkpoint {path} does not exist")
        if use_ema:
            raise UserError(f"--ema: {path} is an exported model (one set of weights); drop --ema")
        return _read_exported(path)
    ckpt = load(path)
    layout = detect(ckpt, path)
    args = _plain_args(ckpt.get("args")) if isinstance(ckpt, dict) and layout.wrapper else {}
    arch = (ckpt.get("arch") if layout.wrapper and isinstance(ckpt.get("arch"), str) else None) or args.get("model")
    released = zoo.released_file(path)
    meta = ckpt if layout.wrapper else {}
    return Weights(path, layout, _weights_of(ckpt, layout, path, use_ema), arch=arch or (released and released.arch),
                   args=args, released=released, epoch=meta.get("epoch"), metric=meta.get("metric"))


def check_timm(weights: Weights, command: str) -> None:
    """DeeperCluster's VGG16 (published padding, optional Sobel input) has no timm twin: say where it loads."""
    if not weights.layout.timm:
        raise UserError(f"{weights.path} is a DeeperCluster/DeepCluster/RotNet VGG16 ({weights.layout.name} layout), "
                        f"which no timm model computes (published padding and Sobel input), so `fdsl {command}` "
                        "cannot use it; probe or fine-tune it with `fdsl eval-linear --pretrained FILE` or "
                        "`fdsl eval-pretrain --pretrained FILE`")


def classifier_name(model) -> str:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    return classifier if isinstance(classifier, str) else classifier[0]


def head_size(weights: Weights, arch: str) -> int:
    """Classes of the file's classifier (0: a backbone), found under the architecture's classifier name."""
    import timm.models

    if weights.layout.headless:
        return 0
    name = timm.models.get_pretrained_cfg_value(arch, "classifier") or "head"
    name = name if isinstance(name, str) else name[0]
    head = weights.state_dict.get(f"{name}.weight")
    return int(head.shape[0]) if head is not None else 0


def key_mismatch(weights: Weights, model, arch: str) -> str | None:
    """None when the weights fit the model exactly, else one sentence naming the keys that differ."""
    own = model.state_dict()
    sd = weights.state_dict
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shapes differ (e.g. {k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} model keys missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} file keys unknown to {arch} (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


# --- a timm model of the weights (evaluate, export) --------------------------------------------------------

def model_options(weights: Weights, model: str | None = None, model_kwargs=(), img_size: int | None = None):
    """The fdsl model/data options of the weights (what factory.create and transforms.data_config read): the
    file's training args or exported config, then the command line's choices."""
    from types import SimpleNamespace

    args, cfg = weights.args, weights.config.get("pretrained_cfg", {})
    kwargs = [f"{k}={json.dumps(v)}" for k, v in weights.config.get("model_args", {}).items()
              if k not in ("num_classes", "img_size")]
    kwargs += [*(args.get("model_kwargs") or []), *model_kwargs]
    input_size = None if img_size else (args.get("input_size") or cfg.get("input_size"))
    return SimpleNamespace(
        model=model or weights.arch, pretrained=False, drop=0.0, drop_path=None, drop_connect=None, drop_block=None,
        model_kwargs=kwargs, input_size=list(input_size) if input_size else None,
        img_size=img_size or args.get("img_size"), mean=args.get("mean") or cfg.get("mean"),
        std=args.get("std") or cfg.get("std"), interpolation=args.get("interpolation") or cfg.get("interpolation"),
        crop_pct=args.get("crop_pct") or cfg.get("crop_pct"))


def build_model(weights: Weights, opts):
    """A timm model of `opts.model` holding exactly the file's weights (a backbone has no classifier)."""
    from fdsl.engine.checkpoint import _resize_pos_embed
    from fdsl.models import factory

    if not opts.model:
        raise UserError(f"{weights.path} ({weights.layout.name} layout) does not name its architecture; pass "
                        "--model NAME (docs/zoo.md lists the released files' architectures)")
    spec = factory.ModelSpec(model=opts.model, model_kwargs=list(opts.model_kwargs or []), img_size=opts.img_size,
                             input_size=opts.input_size)
    model = factory.create(spec, head_size(weights, opts.model.removeprefix("timm:")))
    pos, own = weights.state_dict.get("pos_embed"), model.state_dict().get("pos_embed")
    if pos is not None and own is not None and pos.shape != own.shape and pos.shape[-1] == own.shape[-1]:
        _resize_pos_embed(model, weights.state_dict)
    problem = key_mismatch(weights, model, opts.model)
    if problem:
        raise UserError(f"{weights.path} ({weights.layout.name} layout) does not fit {opts.model}: {problem}; "
                        "pass the --model and --model-kwargs it was trained with")
    model.load_state_dict(weights.state_dict, strict=False)  # only BatchNorm step counters can be missing
    return model.eval()


def label_names(weights: Weights, classes: int, folder: str | None = None) -> list[str] | None:
    """Class names by classifier index: from `folder`'s class subfolders, the exported config, or the training
    folder the file's args name (when it is still there); None when unknown."""
    from fdsl.data.folder import find_split
    from fdsl.data.naming import natural_key

    if classes == 0:
        return None
    names = weights.config.get("label_names")
    if folder is None and names and len(names) == classes:
        return list(names)
    args = weights.args
    root = folder or args.get("train_dir") or (
        find_split(args["data_dir"], args.get("train_split") or "train") if args.get("data_dir") else None)
    if not root or not os.path.isdir(root):
        return None
    subdirs = sorted((d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))), key=natural_key)
    if folder is not None and len(subdirs) != classes:
        raise UserError(f"--labels-from {folder} has {len(subdirs)} class folders but the model has {classes} "
                        "classes; pass the training folder of this model")
    return subdirs if len(subdirs) == classes else None
