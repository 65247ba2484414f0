"""Checkpoints: the published file names and dict keys (timm's CheckpointSaver), written atomically by rank 0.

Differences from the published CheckpointSaver, all fixes of D10/D11 (docs/training.md, "Published defects
fixed"): `args` is a plain dict (plain_args) so fdsl's files
load with torch.load(weights_only=True); the saver's top-N list and best metric are stored in the file and
restored on resume; held copies do not depend on the top-N list; an existing run dir is overwritten in place
(os.replace) instead of failing on a hard link.
"""
from __future__ import annotations

import os
import shutil

import torch

from fdsl.checkpoint_io import load, unwrap_state_dict  # noqa: F401 - re-exported for the engine's callers
from fdsl.engine import released
from fdsl.errors import UserError

VERSION = 2


def save_atomic(obj, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _link_atomic(src: str, dst: str) -> None:
    """Hard link (as published) through a temp name, so an existing dst is replaced; copy if links fail."""
    tmp = f"{dst}.tmp{os.getpid()}"
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


class CheckpointSaver:
    def __init__(self, run_dir: str, higher_is_better: bool, max_history: int = 10, held_interval: int | None = None):
        self.run_dir = run_dir
        self.higher_is_better = higher_is_better
        self.max_history = max_history
        self.held_interval = held_interval
        self.history: list[tuple[int, float]] = []  # (epoch, metric), best first
        self.best: tuple[int, float] | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def save(self, state: dict, epoch: int, metric: float | None) -> None:
        """Write last.pth.tar; rank the epoch for model_best and the history unless `metric` is None."""
        state = dict(state, epoch=epoch, metric=metric)
        last = self.path("last.pth.tar")
        if metric is not None:
            if self.best is None or self._better(metric, self.best[1]):
                self.best = (epoch, metric)
            self._update_history(epoch, metric)
        state["saver"] = self.state_dict()
        save_atomic(state, last)
        if any(e == epoch for e, _ in self.history):
            _link_atomic(last, self.path(f"checkpoint-{epoch}.pth.tar"))
        if self.best is not None and self.best[0] == epoch:
            _link_atomic(last, self.path("model_best.pth.tar"))
        if self.held_interval and epoch % self.held_interval == 0:
            tmp = self.path(f"held-checkpoint-{epoch}.pth.tar.tmp")
            shutil.copyfile(last, tmp)
            os.replace(tmp, self.path(f"held-checkpoint-{epoch}.pth.tar"))

    def _update_history(self, epoch: int, metric: float) -> None:
        entries = [(e, m) for e, m in self.history if e != epoch] + [(epoch, metric)]
        entries.sort(key=lambda em: em[1], reverse=self.higher_is_better)
        for e, _ in entries[self.max_history:]:
            _remove(self.path(f"checkpoint-{e}.pth.tar"))
        self.history = entries[: self.max_history]

    def state_dict(self) -> dict:
        return {"history": [list(em) for em in self.history], "best": list(self.best) if self.best else None}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.history = [tuple(em) for em in state.get("history", [])]
            self.best = tuple(state["best"]) if state.get("best") else None

    def save_recovery(self, state: dict, epoch: int, batch_idx: int) -> None:
        path = self.path(f"recovery-{epoch}-{batch_idx}.pth.tar")
        save_atomic(state, path)
        recoveries = sorted((p for p in os.listdir(self.run_dir) if p.startswith("recovery-")),
                            key=lambda p: os.path.getmtime(self.path(p)))
        for old in recoveries[:-2]:
            _remove(self.path(old))


def head_names(model) -> list[str]:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "head")
    names = [classifier] if isinstance(classifier, str) else list(classifier)
    return names + ["head_dist", "fc"]


def _resize_pos_embed(model, sd: dict) -> None:
    from timm.layers import resample_abs_pos_embed

    pos = sd["pos_embed"]
    target = model.state_dict()["pos_embed"]
    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    grid = model.patch_embed.grid_size
    sd["pos_embed"] = resample_abs_pos_embed(pos, list(grid), num_prefix_tokens=prefix, interpolation="bicubic",
                                             antialias=False)
    if sd["pos_embed"].shape != target.shape:
        raise UserError(f"pos_embed {tuple(pos.shape)} cannot be resized to {tuple(target.shape)}")


def load_pretrained(model, path: str, arch: str, log=print) -> None:
    """Initialise `model` from a checkpoint for fine-tuning (D15 of docs/training.md fixed): any layout of
    fdsl.engine.released (fdsl, timm, the papers' files, SSL backbones, an `fdsl export` directory); the head
    is dropped only when its shape differs, pos_embed is bicubic-resized, missing/unexpected keys are printed,
    and a file from another architecture is one clear error."""
    weights = released.read(path)
    released.check_timm(weights, "finetune")
    sd = dict(weights.state_dict)
    own = model.state_dict()
    src_arch = weights.arch
    for head in head_names(model):
        for suffix in (".weight", ".bias"):
            key = head + suffix
            if key in sd and (key not in own or sd[key].shape != own[key].shape):
                log(f"pretrained: dropping {key} {tuple(sd[key].shape)} (model has "
                    f"{tuple(own[key].shape) if key in own else 'none'})")
                del sd[key]
    pos, own_pos = sd.get("pos_embed"), own.get("pos_embed")
    if pos is not None and own_pos is not None and pos.shape != own_pos.shape and pos.shape[-1] == own_pos.shape[-1]:
        log(f"pretrained: resizing pos_embed {tuple(sd['pos_embed'].shape)} -> {tuple(own['pos_embed'].shape)}")
        _resize_pos_embed(model, sd)
    mismatched = [k for k, v in sd.items() if k in own and v.shape != own[k].shape]
    matched = [k for k in sd if k in own]
    if mismatched or not matched:
        if mismatched:
            k = mismatched[0]
            detail = (f"{len(mismatched)} shape mismatches, e.g. {k} {tuple(sd[k].shape)} vs "
                      f"{tuple(own[k].shape)} in the model")
        else:
            detail = f"no matching keys; the file has e.g. {', '.join(list(sd)[:3])}"
        raise UserError(f"--pretrained-path {path} ({weights.layout.name} layout) was written for "
                        f"{src_arch or 'another architecture'}, not {arch} ({detail}); pass --model "
                        f"{src_arch or '<its model>'} or another checkpoint")
    result = model.load_state_dict(sd, strict=False)
    log(f"pretrained: loaded {len(matched)} tensors from {path} ({weights.describe()}); missing "
        f"{list(result.missing_keys)}; unexpected {list(result.unexpected_keys)}")
