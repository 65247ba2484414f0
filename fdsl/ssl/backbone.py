"""Backbones of the contrastive methods and the HPT chain: creation, base weights, HPT-BN, extraction.

A backbone is any model whose forward returns one pooled feature per image ([B, D], `.num_features` = D):
timm models with num_classes=0 (ResNet-50/18 and any other), or torchvision ResNets (`torchvision:resnet50`)
with the fc layer removed. timm and torchvision ResNets share their state-dict key names (conv1, bn1,
layerX.Y.convZ, downsample.0/1), which is the "torchvision-style" format every base checkpoint is read as.

Starting from base weights (`load_base`) is separate from resuming a run: a base only initialises the
backbone before the method copies it into its momentum encoder; a resumed run restores the method's whole
state through the engine and never reads the base again.
"""
from __future__ import annotations

import json
import os
import pickle

import torch
from torch import nn

from fdsl.engine import checkpoint
from fdsl.errors import UserError

RANDOM_INIT = ("", "none", "random", "no")

# Where backbone weights live in the checkpoints fdsl reads, most specific first. After checkpoint's
# unwrap_state_dict has removed one leading `module.`: OpenSelfSup/fdsl MoCo (`encoder_q.0.`, alias
# `backbone.`), OpenSelfSup/fdsl BYOL (`online_net.0.`), official MoCo (`module.encoder_q.`), plain
# torchvision/timm/fdsl classifier files (no prefix; their head is dropped as an unexpected key).
PREFIXES = ("encoder_q.0.", "online_net.0.", "backbone.", "encoder_q.", "module.encoder_q.", "model.", "")

# Keys of classifier heads and MoCo MLPs that a backbone never has.
HEAD_PREFIXES = ("fc.", "head.", "classifier.", "head_dist.")


def create_backbone(name: str, **kwargs) -> nn.Module:
    """The pooled-feature model `name`: a timm model name, or `torchvision:resnet50` / `torchvision:resnet18`."""
    if name.startswith("torchvision:"):
        import torchvision

        arch = name.split(":", 1)[1]
        if not hasattr(torchvision.models, arch):
            raise UserError(f"--arch {name}: torchvision has no model {arch!r}")
        model = getattr(torchvision.models, arch)(weights=None)
        if not isinstance(getattr(model, "fc", None), nn.Linear):
            raise UserError(f"--arch {name}: only torchvision ResNets are supported; use a timm name")
        model.num_features = model.fc.in_features
        model.fc = nn.Identity()
        return model
    import timm

    from fdsl.models.factory import _offline

    name = name.removeprefix("timm:")
    if not timm.is_model(name):
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise UserError(f"--arch {name}: unknown model" + (f"; did you mean {', '.join(near)}?" if near else ""))
    _offline()
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    if not getattr(model, "num_features", None):
        raise UserError(f"--arch {name}: the model exposes no pooled feature (num_features)")
    return model


def is_random_init(path: str | None) -> bool:
    return path is None or str(path).strip().lower() in RANDOM_INIT


def _best_prefix(sd: dict, own: dict) -> tuple[str, dict]:
    """The prefix under which most of the backbone's keys are found, and the sub-dict with it stripped."""
    best, best_sd, best_hits = "", {}, -1
    for prefix in PREFIXES:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        hits = sum(1 for k in sub if k in own)
        if hits > best_hits:
            best, best_sd, best_hits = prefix, sub, hits
    return best, best_sd


def backbone_state_dict(ckpt, own_keys: dict | None = None) -> tuple[str, dict]:
    """(prefix found, backbone weights under torchvision-style names) of any checkpoint fdsl reads.

    Without `own_keys` (extraction), the first of PREFIXES that any key starts with wins; heads are dropped."""
    sd = checkpoint.unwrap_state_dict(ckpt)
    if own_keys is not None:
        return _best_prefix(sd, own_keys)
    for prefix in PREFIXES[:-1]:
        sub = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if sub:
            return prefix, {k: v for k, v in sub.items() if not k.startswith(HEAD_PREFIXES)}
    return "", {k: v for k, v in sd.items() if not k.startswith(HEAD_PREFIXES)}


def load_base(backbone: nn.Module, path: str | None, log=print) -> str:
    """Initialise `backbone` from a base checkpoint (or leave it random for "", none, random). Every backbone
    tensor must be found with the right shape; heads and necks in the file are ignored. Returns a short
    description for the log."""
    if is_random_init(path):
        return "random init"
    ckpt = checkpoint.load(path)
    own = backbone.state_dict()
    prefix, sd = backbone_state_dict(ckpt, own)
    mismatched = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if mismatched or missing or not sd:
        arch = ckpt.get("arch") if isinstance(ckpt, dict) else None
        parts = []
        if mismatched:
            shown = ", ".join(f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:3])
            parts.append(f"{len(mismatched)} shape mismatches ({shown})")
        if missing:
            parts.append(f"{len(missing)} backbone keys missing ({', '.join(missing[:3])})")
        raise UserError(f"base checkpoint {path}{f' ({arch})' if arch else ''} does not fit the backbone: "
                        f"{'; '.join(parts)}; pass the base checkpoint of the same --arch, or 'random'")
    result = backbone.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    dropped = [k for k in sd if k not in own]
    log(f"base: loaded {len(own) - len(result.missing_keys)} backbone tensors from {path}"
        f"{f' (prefix {prefix!r})' if prefix else ''}" + (f"; ignored {len(dropped)} head/neck keys" if dropped else ""))
    return path


NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def train_only_batchnorm(backbone: nn.Module) -> list[str]:
    """HPT-BN (`frozen_stages=4, norm_train=True`): every backbone parameter is frozen except the BatchNorm
    weights and biases; BatchNorm layers stay in train mode, so their running statistics adapt too.
    Returns the names of the parameters left trainable."""
    trainable = []
    for mod_name, module in backbone.named_modules():
        is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for p_name, param in module.named_parameters(recurse=False):
            param.requires_grad_(is_bn)
            if is_bn:
                trainable.append(f"{mod_name}.{p_name}" if mod_name else p_name)
    if not trainable:
        raise UserError("--bn-only: the backbone has no BatchNorm layers to train")
    return trainable


# ---- extraction and conversion -------------------------------------------------------------------------

def extract_backbone(src: str, out: str, meta: dict | None = None) -> int:
    """Write the backbone of a MoCo/BYOL/supervised checkpoint as a torchvision-style state dict
    ({state_dict, author}, plus a `.json` sidecar with `meta` naming where it came from). Returns the
    number of tensors."""
    if not out.endswith((".pth", ".pth.tar")):
        raise UserError(f"output {out} must end in .pth (a torchvision-style state dict)")
    ckpt = checkpoint.load(src)
    _, sd = backbone_state_dict(ckpt)
    if not sd:
        raise UserError(f"{src} holds no backbone weights (looked for {', '.join(p for p in PREFIXES if p)})")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    checkpoint.save_atomic({"state_dict": {k: v.clone() for k, v in sd.items()}, "author": "fdsl"}, out)
    if meta is not None:
        write_json_atomic(meta, sidecar(out))
    return len(sd)


def sidecar(path: str) -> str:
    """final_backbone.pth -> final_backbone.json: where a backbone came from (base, dataset, steps)."""
    return path.removesuffix(".tar").removesuffix(".pth") + ".json"


def write_json_atomic(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def detectron2_key(key: str) -> str:
    """torchvision ResNet name -> detectron2 ResNet name (the published convert-pretrain-to-detectron2)."""
    key = key.removeprefix("module.")
    if "layer" not in key:
        key = "stem." + key
    for stage in (1, 2, 3, 4):
        key = key.replace(f"layer{stage}", f"res{stage + 1}")
    for k in (1, 2, 3):
        key = key.replace(f"bn{k}", f"conv{k}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def to_detectron2(src: str, out: str) -> int:
    """Convert a backbone (or any MoCo/BYOL checkpoint) to detectron2's format: renamed keys, numpy arrays,
    `matching_heuristics`. `.pkl` is written with pickle (what detectron2 reads without torch.load); any other
    name with torch.save, as published."""
    _, sd = backbone_state_dict(checkpoint.load(src))
    if not sd:
        raise UserError(f"{src} holds no backbone weights")
    model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in sd.items()
             if not k.endswith("num_batches_tracked")}
    obj = {"model": model, "__author__": "fdsl", "matching_heuristics": True}
    tmp = f"{out}.tmp{os.getpid()}"
    if out.endswith(".pkl"):
        with open(tmp, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, tmp)
    os.replace(tmp, out)
    return len(model)
