"""timm model creation with the published keyword handling (docs/training.md, "Command lines").

Improved on D14: --img-size / --input-size are passed to models that take `img_size` (ViT family), so a
`*_224` ViT trains at 32 or 384 px instead of crashing at the first forward. Weights are never downloaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class ModelSpec:
    """The model options of a run, typed (the recipe fills them from --model, --drop-path, --model-kwargs, ...)."""

    model: str
    pretrained: bool = False  # timm weights from the local cache, never downloaded
    drop: float = 0.0
    drop_path: float | None = None
    drop_connect: float | None = None  # deprecated alias of drop_path
    drop_block: float | None = None
    model_kwargs: list[str] = field(default_factory=list)  # KEY=VALUE, values parsed as YAML
    img_size: int | None = None
    input_size: list[int] | None = None  # C H W

    @property
    def requested_img_size(self) -> int | None:
        return self.input_size[-1] if self.input_size else self.img_size


def create(spec: ModelSpec, num_classes: int) -> torch.nn.Module:
    name = spec.model.split(":", 1)[1] if spec.model.startswith("timm:") else spec.model
    if not timm.is_model(name) and not name.startswith("hf_hub:"):
        import difflib

        near = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise UserError(f"unknown timm model {name!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
    kwargs = {"num_classes": num_classes, "drop_rate": spec.drop,
              "drop_path_rate": spec.drop_path if spec.drop_path is not None else spec.drop_connect,
              "drop_block_rate": spec.drop_block}
    kwargs.update(parse_model_kwargs(spec.model_kwargs))
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    size = spec.requested_img_size
    if size is not None and "img_size" not in kwargs:
        kwargs["img_size"] = size
    _offline()
    try:
        return _create(name, spec.pretrained, kwargs)
    except TypeError as err:
        if "img_size" not in kwargs or "img_size" not in str(err):
            raise UserError(f"model {name} does not accept these options ({err})") from None
    kwargs.pop("img_size")  # CNNs take any input size
    return _create(name, spec.pretrained, kwargs)


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
