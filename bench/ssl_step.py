"""MoCo v2 and BYOL step throughput: fdsl's methods in the engine loop (fdsl.engine.loop.train_one_epoch)
against (1) a bare forward/backward/step of the same encoders and (2) the same step assembled from the
`lightly` package's blocks, side by side on synthetic tensors (data loading excluded).

    PYTHONPATH=.:/path/to/lightly taskset -c 0 python bench/ssl_step.py     # CPU, ResNet-18 at 64 px

What each variant computes per step, on two views of a batch of B images:
  bare       query encoder fwd+bwd on view 1, key/target encoder fwd (no grad) on view 2 (BYOL: both
             directions), loss = a plain sum; the same optimiser step. The floor of any implementation.
  fdsl       MoCo v2: InfoNCE over the 65,536-key queue, enqueue, momentum update (shuffle-BN on when BN
             groups > 1); BYOL: symmetric loss, cosine-tau EMA; both through the engine loop.
  lightly    lightly.models.modules heads, lightly.loss (NTXentLoss with a memory bank / negative cosine),
             lightly.models.utils.update_momentum (+ batch_shuffle for MoCo); the same optimiser.
Variants alternate step by step (rounds of --steps) and the median step time of each is reported, so load
on a shared machine hits all of them alike; the figures of merit are the ratios.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from fdsl.engine.distributed import DistInfo
from fdsl.engine.loop import LoopContext, train_one_epoch
from fdsl.engine.schedule import Schedule
from fdsl.ssl.backbone import create_backbone
from fdsl.ssl.byol import BYOL
from fdsl.ssl.moco import MoCo
from fdsl.ssl.optim import build_optimizer


def options():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--queue-size", type=int, default=65536)
    p.add_argument("--bn-group-size", type=int, default=0, help="MoCo BN group size (0: one group, no shuffle)")
    p.add_argument("--steps", type=int, default=1, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--methods", nargs="+", default=["moco", "byol"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast in the fdsl and bare steps (the engine's --amp)")
    return p.parse_args()


def views(o):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(o.batch_size, 3, o.img_size, o.img_size, generator=g).to(o.device) for _ in range(2)]


# ---- fdsl ---------------------------------------------------------------------------------------------

def fdsl_runner(o, method_name):
    torch.manual_seed(0)
    backbone = create_backbone(o.arch)
    if method_name == "moco":
        method = MoCo(backbone, global_batch=o.batch_size, local_batch=o.batch_size, queue_size=o.queue_size,
                      bn_group_size=o.bn_group_size or None)
        opt = build_optimizer("sgd", method.module, 0.03, 0.9, 1e-4)
    else:
        method = BYOL(backbone, total_updates=10_000, hidden=4096, proj_dim=256)
        opt = build_optimizer("lars", method.module, 0.3, 0.9, 1e-6)
    method.module.to(o.device)
    ctx = LoopContext(info=DistInfo(device=torch.device(o.device)), log_interval=10**9,
                      amp_dtype=torch.bfloat16 if o.amp else None)
    sched = Schedule(None, True, o.steps)
    v1, v2 = views(o)
    batch = ((v1, v2), torch.zeros(o.batch_size, dtype=torch.long, device=o.device))

    def run(steps):
        train_one_epoch(method, method.module, [batch] * steps, opt, sched, ctx, epoch=0)
    return run


# ---- bare ---------------------------------------------------------------------------------------------

def encoders(o, method_name):
    """The method's encoders as plain modules: (online with grad, frozen target)."""
    torch.manual_seed(0)
    backbone = create_backbone(o.arch)
    if method_name == "moco":
        d = backbone.num_features
        online = nn.Sequential(backbone, nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 128))
    else:
        online = nn.Sequential(backbone, mlp(backbone.num_features, 4096, 256), mlp(256, 4096, 256))
    target = copy.deepcopy(online if method_name == "moco" else online[:2])
    for p in target.parameters():
        p.requires_grad_(False)
    return online, target


def mlp(i, h, o):
    return nn.Sequential(nn.Linear(i, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Linear(h, o))


def bare_runner(o, method_name):
    online, target = encoders(o, method_name)
    online.to(o.device), target.to(o.device)
    opt = (build_optimizer("sgd", online, 0.03, 0.9, 1e-4) if method_name == "moco"
           else build_optimizer("lars", online, 0.3, 0.9, 1e-6))
    v1, v2 = views(o)

    def run(steps):
        for _ in range(steps):
            with torch.autocast(torch.device(o.device).type, dtype=torch.bfloat16, enabled=o.amp):
                loss = forward()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def forward():
        if method_name == "moco":
            loss = online(v1).sum()
            with torch.no_grad():
                target(v2)
        else:
            loss = online(v1).sum() + online(v2).sum()
            with torch.no_grad():
                target(v1), target(v2)
        return loss.float()
    return run


# ---- lightly ------------------------------------------------------------------------------------------

def lightly_runner(o, method_name):
    from lightly.loss import NegativeCosineSimilarity, NTXentLoss
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead
    from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum

    torch.manual_seed(0)
    backbone = create_backbone(o.arch)
    d = backbone.num_features
    v1, v2 = views(o)
    if method_name == "moco":
        head = MoCoProjectionHead(d, d, 128)
        backbone_k, head_k = copy.deepcopy(backbone), copy.deepcopy(head)
        deactivate_requires_grad(backbone_k)
        deactivate_requires_grad(head_k)
        criterion = NTXentLoss(temperature=0.2, memory_bank_size=(o.queue_size, 128))
        params = nn.ModuleList([backbone, head])
        for m in (params, backbone_k, head_k, criterion):
            m.to(o.device)
        opt = build_optimizer("sgd", params, 0.03, 0.9, 1e-4)

        def step():
            update_momentum(backbone, backbone_k, 0.999)
            update_momentum(head, head_k, 0.999)
            q = head(backbone(v1))
            with torch.no_grad():
                shuffled, order = batch_shuffle(v2)
                k = batch_unshuffle(head_k(backbone_k(shuffled)), order)
            return criterion(q, k)
    else:
        proj, pred = BYOLProjectionHead(d, 4096, 256), BYOLPredictionHead(256, 4096, 256)
        backbone_t, proj_t = copy.deepcopy(backbone), copy.deepcopy(proj)
        deactivate_requires_grad(backbone_t)
        deactivate_requires_grad(proj_t)
        criterion = NegativeCosineSimilarity()
        params = nn.ModuleList([backbone, proj, pred])
        for m in (params, backbone_t, proj_t):
            m.to(o.device)
        opt = build_optimizer("lars", params, 0.3, 0.9, 1e-6)

        def step():
            update_momentum(backbone, backbone_t, 0.99)
            update_momentum(proj, proj_t, 0.99)
            p1, p2 = pred(proj(backbone(v1))), pred(proj(backbone(v2)))
            with torch.no_grad():
                z1, z2 = proj_t(backbone_t(v1)), proj_t(backbone_t(v2))
            return criterion(p1, z2) + criterion(p2, z1)

    def run(steps):
        for _ in range(steps):
            loss = step()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    o = options()
    torch.set_num_threads(o.threads)
    try:
        import lightly  # noqa: F401

        have_lightly = True
    except ImportError:
        have_lightly = False
        print("lightly is not importable: comparing against the bare step only")
    print(f"{o.arch} at {o.img_size} px, batch {o.batch_size}, {o.device}, {torch.get_num_threads()} thread(s), "
          f"queue {o.queue_size}, BN group size {o.bn_group_size or 'whole batch'}")
    for name in o.methods:
        runners = {"bare": bare_runner(o, name), "fdsl": fdsl_runner(o, name)}
        if have_lightly:
            runners["lightly"] = lightly_runner(o, name)
        for run in runners.values():  # warm-up
            run(1)
        times = {k: [] for k in runners}
        for _ in range(o.rounds):
            for key, run in runners.items():
                sync(o.device)
                start = time.perf_counter()
                run(o.steps)
                sync(o.device)
                times[key].append((time.perf_counter() - start) / o.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        line = "  ".join(f"{k} {o.batch_size / t:.1f} img/s ({t * 1000:.0f} ms/step)" for k, t in med.items())
        print(f"{name}: {line}")
        ratios = f"fdsl/bare {med['bare'] / med['fdsl']:.3f}x"
        if "lightly" in med:
            ratios += f"  fdsl/lightly {med['lightly'] / med['fdsl']:.3f}x"
        print(f"{name}: {ratios}  (throughput ratios; targets >= 0.9 vs bare, >= 1.0 vs lightly)")


if __name__ == "__main__":
    main()
