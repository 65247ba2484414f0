"""timm model creation with the published keyword handling (spec 1.7).

Improved on D14: --img-size / --input-size are passed to models that take `img_size` (ViT family), so a
`*_224` ViT trains at 32 or 384 px instead of crashing at the first forward. Weights are never downloaded.
"""
from __future__ import annotations

import os

import timm
import torch

from fdsl.errors import UserError


def parse_model_kwargs(items: list[str]) -> dict:
    """['patch_size=4', 'embed_dim=128'] -> {'patch_size': 4, 'embed_dim': 128} (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--model-kwargs expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def requested_img_size(args) -> int | None:
    if args.input_size:
        return args.input_size[-1]
    return args.img_size


def create(args, num_classes: int) -> torch.nn.Module:
    name = args.model.split(":", 1)[1] if args.model.startswith("timm:") else args.model
    if not timm.is_model(name) and not name.startswith("hf_hub:"):
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise UserError(f"unknown timm model {name!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
    kwargs = {"num_classes": num_classes, "drop_rate": args.drop,
              "drop_path_rate": args.drop_path if args.drop_path is not None else args.drop_connect,
              "drop_block_rate": args.drop_block}
    kwargs.update(parse_model_kwargs(args.model_kwargs))
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    size = requested_img_size(args)
    if size is not None and "img_size" not in kwargs:
        kwargs["img_size"] = size
    _offline()
    try:
        return _create(name, args.pretrained, kwargs)
    except TypeError as err:
        if "img_size" not in kwargs or "img_size" not in str(err):
            raise UserError(f"model {name} does not accept these options ({err})") from None
    kwargs.pop("img_size")  # CNNs take any input size
    return _create(name, args.pretrained, kwargs)


def _offline() -> None:
    """Never download at run time: huggingface_hub reads HF_HUB_OFFLINE at import, so set its constant too."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants

        hf_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def _create(name: str, pretrained: bool, kwargs: dict) -> torch.nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError:
        raise
    except Exception as err:  # hub/cache errors come in many types
        if pretrained:
            raise UserError(f"--pretrained: timm weights for {name} are not in the local cache and fdsl never "
                            f"downloads ({type(err).__name__}); pre-fetch them or pass --pretrained-path") from None
        raise
