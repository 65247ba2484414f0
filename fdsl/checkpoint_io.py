"""Reading checkpoint files, below models, engine and ssl so that each can use it: `load` (weights_only, the
published files' argparse.Namespace allowed) and `unwrap_state_dict` (the weights of any supported layout)."""
from __future__ import annotations

import argparse
import os

import torch

from fdsl.errors import UserError


def load(path: str) -> dict:
    """fdsl, published (args as argparse.Namespace) and plain state-dict files, without arbitrary unpickling."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        raise UserError(f"cannot read checkpoint {path}: {str(err).splitlines()[0][:200]}") from None


def unwrap_state_dict(ckpt) -> dict:
    """The model weights of any supported file: fdsl/published (`state_dict`), DeiT/hydra (`model`),
    VISSL (`classy_state_dict`), or a plain state dict; a leading `module.` is stripped."""
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        sd = ckpt["state_dict"]
    elif isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        sd = ckpt["model"]
    elif isinstance(ckpt, dict) and "classy_state_dict" in ckpt:
        trunk = ckpt["classy_state_dict"]["base_model"]["model"]["trunk"]
        sd = {k.replace("class_token", "cls_token").replace("pos_embedding", "pos_embed"): v for k, v in trunk.items()}
    else:
        sd = ckpt
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError("checkpoint holds no model weights (expected state_dict, model or a plain state dict)")
    return {(k.removeprefix("module.")): v for k, v in sd.items()}
