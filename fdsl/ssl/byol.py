"""BYOL as HPT runs it (OpenSelfSup `BYOL` + `NonLinearNeckSimCLR` + `LatentPredictHead` + `BYOLHook`;
docs/hpt.md, "BYOL").

Online network = backbone + projector (D -> 4096 -> BN -> ReLU -> 256), predictor (256 -> 4096 -> 256), target
network = a frozen copy of the online network moved towards it after every optimiser step with a momentum
tau that follows a cosine from tau_0 (0.99) to 1 over the run:

    tau(k) = 1 - (1 - tau_0) * (cos(pi * k / K) + 1) / 2,   k = optimiser steps done before this one, K = all

(the published BYOLHook counts k and K in forward passes: `passes`, see BYOL.after_update)

so the first update uses tau_0 and the schedule depends only on the global step count (it continues exactly
after a resume). Loss per direction: 2 - 2 cos(p, z) averaged over the batch (the published -2 * sum(p.z) / N
plus the constant 2, so 0 is perfect agreement), summed over both directions: the value lies in [0, 8].
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from fdsl.engine.method import StepOutput
from fdsl.ssl.methods import PretrainOptions, SelfSupervised
from fdsl.ssl.moco import split_views


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """NonLinearNeckSimCLR with bias and no last BN: Linear -> BatchNorm1d -> ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


def init_linears(module: nn.Module, kind: str) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if kind == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)


class BYOLModule(nn.Module):
    def __init__(self, backbone: nn.Module, proj_dim: int = 256, hidden: int = 4096):
        super().__init__()
        projector = mlp(backbone.num_features, hidden, proj_dim)
        init_linears(projector, "kaiming")
        self.online_net = nn.Sequential(backbone, projector)
        self.target_net = copy.deepcopy(self.online_net)
        for p in self.target_net.parameters():
            p.requires_grad_(False)
        self.predictor = mlp(proj_dim, hidden, proj_dim)
        init_linears(self.predictor, "normal")

    @property
    def backbone(self) -> nn.Module:
        return self.online_net[0]

    def forward(self, view_1: torch.Tensor, view_2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions of both views; each view is its own pass, so BN statistics are per view (published)."""
        return self.predictor(self.online_net(view_1)), self.predictor(self.online_net(view_2))


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), mean over the batch."""
    return 2 - 2 * (F.normalize(p.float(), dim=1) * F.normalize(z.float(), dim=1)).sum(1).mean()


def tau_at(step: int, total: int, base: float = 0.99, end: float = 1.0) -> float:
    """Target momentum for the update after optimiser step `step` (0-based) of `total`."""
    return end - (end - base) * (math.cos(math.pi * step / max(total, 1)) + 1) / 2


class BYOL(SelfSupervised):
    name = "byol"
    syncs_bn = True

    def __init__(self, backbone: nn.Module, *, total_updates: int, base_momentum: float = 0.99,
                 proj_dim: int = 256, hidden: int = 4096, passes: int = 1):
        self.module = BYOLModule(backbone, proj_dim, hidden)
        self.total_updates = total_updates
        self.passes = passes  # forward passes per step that tau counts in (published BYOLHook: 2)
        self.base_momentum = base_momentum
        self.tau = base_momentum  # the momentum of the last target update
        self.updates = 0

    @classmethod
    def from_options(cls, backbone: nn.Module, options: PretrainOptions, global_batch: int,
                     local_batch: int) -> BYOL:
        steps, passes = cls.budget(options)
        return cls(backbone, total_updates=steps, base_momentum=options.byol_momentum, proj_dim=options.proj_dim,
                   hidden=options.proj_hidden, passes=passes)

    @classmethod
    def budget(cls, options: PretrainOptions) -> tuple[int, int]:
        """As published (`published_schedule`): its N-iters config set total_iters = 2N and the trainer
        multiplied that by the accumulation (update_interval 2), so 4N passes of 128 = 2N steps of 256 ran, and
        the warm-up, the cosine and tau counted the passes. --published-schedule false: N steps, as MoCo."""
        if options.published_schedule:
            return 2 * options.iters, options.accum_steps
        return options.iters, 1

    def training_step(self, model, batch, ctx) -> StepOutput:
        view_1, view_2 = split_views(batch)
        with ctx.autocast():
            p1, p2 = model(view_1, view_2)
            with torch.no_grad():
                z1, z2 = self.module.target_net(view_1), self.module.target_net(view_2)
            loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        return StepOutput(loss, view_1.shape[0], {"tau": torch.tensor(self.tau, device=loss.device)})

    @torch.no_grad()
    def after_update(self, num_updates: int, ctx=None) -> None:
        """theta_t <- tau theta_t + (1 - tau) theta_o (parameters only), tau from the global step count. With
        `passes` > 1, k and K count forward passes: the step after k steps is taken at pass passes*k+passes-1."""
        k, n = num_updates - 1, self.passes
        self.tau = tau_at(n * k + n - 1, n * self.total_updates, self.base_momentum)
        self.updates = num_updates
        target = list(self.module.target_net.parameters())
        online = list(self.module.online_net.parameters())
        torch._foreach_lerp_(target, online, 1.0 - self.tau)

    def state_dict(self) -> dict:
        return {"tau": self.tau, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.tau = float(state.get("tau", self.base_momentum))
        self.updates = int(state.get("updates", 0))
