"""DeeperCluster checkpoints in the published layout, both ways, so that the published eval_linear.py,
eval_voc_classif.py, eval_pretrain.py (src/model/pretrain.py load_pretrained) and main.py's resume read fdsl's
runs, and fdsl reads theirs. What the published main.py writes (src/trainer.py save_checkpoint):

  checkpoint.pth.tar       epoch (epochs done), start_iter, state_dict (the trunk Net under DDP:
                           module.sobel.*, module.body.*), optimizer (the trunk's SGD), pred_layer_state_dict
                           (the super-class head: module.weight, module.bias), optimizer_pred_layer
  <g>-pred_layer.pth.tar   epoch, start_iter, state_dict (sub-class head g: module.weight, module.bias), optimizer
  checkpoints/checkpoint<e>.pth.tar   a copy of checkpoint.pth.tar every checkpoint_freq epochs

`fdsl deepercluster-convert CKPT OUT_DIR` writes them from any fdsl DeeperCluster checkpoint.
fdsl keeps one SGD over every tensor (trunk, then super_head, sub_weight [S, k_sub, D], sub_bias); its
momentum buffers are split into the published per-module optimizers and joined back.
"""
from __future__ import annotations

import os
import shutil

import torch

from fdsl.engine.checkpoint import save_atomic

MAIN = "checkpoint.pth.tar"


def head_file(group: int) -> str:
    return f"{group}-pred_layer.pth.tar"


def trainable_names(module: torch.nn.Module) -> list[str]:
    """Parameter names in the order of fdsl's optimizer (every tensor that trains)."""
    return [name for name, p in module.named_parameters() if p.requires_grad]


def _sgd_state(names: list[str], momentum: dict, hyper: dict, slot: int | None = None) -> dict:
    """A torch SGD state dict over `names` (their momentum, or slice `slot` of it)."""
    state = {}
    for i, name in enumerate(names):
        if name in momentum:
            state[i] = {"momentum_buffer": momentum[name] if slot is None else momentum[name][slot].clone()}
    return {"state": state, "param_groups": [dict(hyper, params=list(range(len(names))))]}


def to_published(state_dict: dict, names: list[str], optimizer_state: dict | None, epoch: int) -> tuple[dict, list]:
    """(checkpoint.pth.tar, [<g>-pred_layer.pth.tar for each group g]) of an fdsl ClusterHeads state dict;
    `names`: trainable_names of the module, `epoch`: epochs done."""
    momentum, hyper = {}, {}
    if optimizer_state is not None:
        group = optimizer_state["param_groups"][0]
        hyper = {k: v for k, v in group.items() if k != "params"}
        for index, value in optimizer_state["state"].items():
            if "momentum_buffer" in value and value["momentum_buffer"] is not None:
                momentum[names[group["params"].index(index)]] = value["momentum_buffer"]
    trunk_names = [n for n in names if n.startswith("trunk.")]
    main = {
        "epoch": epoch, "start_iter": 0,
        "state_dict": {"module." + k.removeprefix("trunk."): v for k, v in state_dict.items() if k.startswith("trunk.")},
        "optimizer": _sgd_state(trunk_names, momentum, hyper),
        "pred_layer_state_dict": {"module.weight": state_dict["super_head.weight"],
                                  "module.bias": state_dict["super_head.bias"]},
        "optimizer_pred_layer": _sgd_state(["super_head.weight", "super_head.bias"], momentum, hyper),
    }
    heads = []
    for g in range(state_dict["sub_weight"].shape[0]):
        heads.append({"epoch": epoch, "start_iter": 0,
                      "state_dict": {"module.weight": state_dict["sub_weight"][g].clone(),
                                     "module.bias": state_dict["sub_bias"][g].clone()},
                      "optimizer": _sgd_state(["sub_weight", "sub_bias"], momentum, hyper, slot=g)})
    return main, heads


def _momentum(opt_state: dict, names: list[str]) -> dict:
    params = opt_state["param_groups"][0]["params"]
    return {names[params.index(i)]: v["momentum_buffer"] for i, v in opt_state["state"].items()
            if v.get("momentum_buffer") is not None}


def from_published(main: dict, heads: list[dict], names: list[str]) -> tuple[dict, dict]:
    """(fdsl ClusterHeads state dict, fdsl SGD state dict) of the published files; `names`: trainable_names
    of the ClusterHeads to load into. Heads without momentum (never stepped) get none."""
    sd = {"trunk." + k.removeprefix("module."): v for k, v in main["state_dict"].items()}
    sd["super_head.weight"] = main["pred_layer_state_dict"]["module.weight"]
    sd["super_head.bias"] = main["pred_layer_state_dict"]["module.bias"]
    sd["sub_weight"] = torch.stack([h["state_dict"]["module.weight"] for h in heads])
    sd["sub_bias"] = torch.stack([h["state_dict"]["module.bias"] for h in heads])
    trunk_names = [n for n in names if n.startswith("trunk.")]
    momentum = _momentum(main["optimizer"], trunk_names)
    momentum.update(_momentum(main["optimizer_pred_layer"], ["super_head.weight", "super_head.bias"]))
    head_momenta = [_momentum(h["optimizer"], ["sub_weight", "sub_bias"]) for h in heads]
    for name in ("sub_weight", "sub_bias"):
        if all(name in m for m in head_momenta):
            momentum[name] = torch.stack([m[name] for m in head_momenta])
    hyper = {k: v for k, v in main["optimizer"]["param_groups"][0].items() if k != "params"}
    state = {i: {"momentum_buffer": momentum[n]} for i, n in enumerate(names) if n in momentum}
    return sd, {"state": state, "param_groups": [dict(hyper, params=list(range(len(names))))]}


def write_published(run_dir: str, module: torch.nn.Module, optimizer, epoch: int, archive: bool) -> None:
    """Write the published files of `module` (a ClusterHeads) after `epoch` epochs, atomically; with
    `archive`, also a copy to checkpoints/checkpoint<epoch - 1>.pth.tar, as published."""
    main, heads = to_published(module.state_dict(), trainable_names(module),
                               None if optimizer is None else optimizer.state_dict(), epoch)
    save_files(run_dir, main, heads, archive)


def save_files(run_dir: str, main: dict, heads: list[dict], archive: bool = False) -> None:
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, MAIN)
    save_atomic(main, path)
    for g, head in enumerate(heads):
        save_atomic(head, os.path.join(run_dir, head_file(g)))
    if archive:
        os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
        copy = os.path.join(run_dir, "checkpoints", f"checkpoint{main['epoch'] - 1}.pth.tar")
        shutil.copyfile(path, f"{copy}.tmp{os.getpid()}")
        os.replace(f"{copy}.tmp{os.getpid()}", copy)


BN_BUFFERS = (".running_mean", ".running_var", ".num_batches_tracked")


def convert_fdsl_checkpoint(path: str, out_dir: str) -> int:
    """An fdsl DeeperCluster checkpoint (last.pth.tar, checkpoint-<e>.pth.tar, ...) of the VGG16 trunk to the
    published files in out_dir; returns the number of sub-class heads. The trainable tensors, in the
    optimizer's order, are the state dict's parameters without the fixed Sobel ones."""
    from fdsl.checkpoint_io import load
    from fdsl.errors import UserError

    ckpt = load(path)
    sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not sd or "sub_weight" not in sd or "trunk.body.features.0.weight" not in sd:
        raise UserError(f"{path} is not an fdsl DeeperCluster checkpoint of the VGG16 trunk (no trunk.body.* "
                        "and sub_weight); the published layout exists for VGG16 only")
    names = [k for k in sd if not k.endswith(BN_BUFFERS) and not k.startswith("trunk.sobel.")]
    epoch, start_iter = ckpt.get("resume_at") or [int(ckpt.get("epoch", -1)) + 1, 0]
    main, heads = to_published(sd, names, ckpt.get("optimizer"), int(epoch))
    for part in [main, *heads]:
        part["start_iter"] = int(start_iter)
    save_files(out_dir, main, heads)
    return len(heads)


def read_published(run_dir: str, num_groups: int) -> tuple[dict, list[dict]]:
    from fdsl.checkpoint_io import load

    return load(os.path.join(run_dir, MAIN)), [load(os.path.join(run_dir, head_file(g))) for g in range(num_groups)]
