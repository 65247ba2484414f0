"""MoCo v2 as HPT runs it (OpenSelfSup `MOCO` + `NonLinearNeckV1` + `ContrastiveHead`; docs/hpt.md, "MoCo v2").

Query encoder = backbone + MLP neck (D -> hidden -> 128, no BN), key encoder = a frozen copy moved towards
the query encoder by momentum m after every optimiser step, a queue of K normalised keys (K x 128) written
at a circular pointer with the keys of the whole global batch, InfoNCE with temperature 0.2 over
[positive, K negatives]. Keys are encoded with shuffle-BN (fdsl.ssl.shuffle_bn).

Everything that moves with training is in `module` (encoders, queue, pointer), so checkpoints and exact
resume carry it; the method's own state is only its step counter (which seeds the shuffles).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from fdsl.engine.method import StepOutput
from fdsl.errors import UserError
from fdsl.ssl import shuffle_bn
from fdsl.ssl.methods import PretrainOptions, SelfSupervised


class MoCoNeck(nn.Sequential):
    """Linear(D, hidden) -> ReLU -> Linear(hidden, out); Kaiming (fan_in, relu) weights, zero biases."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
        for m in self:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)


class MoCoModule(nn.Module):
    def __init__(self, backbone: nn.Module, feat_dim: int = 128, hidden: int | None = None,
                 queue_size: int = 65536):
        super().__init__()
        dim = backbone.num_features
        self.encoder_q = nn.Sequential(backbone, MoCoNeck(dim, hidden or dim, feat_dim))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, feat_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def backbone(self) -> nn.Module:
        return self.encoder_q[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder_q(images)


def check_queue(queue_size: int, global_batch: int) -> None:
    if queue_size % global_batch == 0:
        return
    below = queue_size // global_batch * global_batch
    options = [str(s) for s in (below, below + global_batch) if s > 0]
    raise UserError(f"--queue-size {queue_size} is not a multiple of the global batch {global_batch}; "
                    f"nearest valid sizes: {' or '.join(options)}")


class MoCo(SelfSupervised):
    name = "moco"
    broadcast_buffers = False  # the queue is identical on every rank already (keys are all-gathered): no 32 MB copy per step

    def __init__(self, backbone: nn.Module, *, global_batch: int, local_batch: int, queue_size: int = 65536,
                 momentum: float = 0.999, temperature: float = 0.2, feat_dim: int = 128, hidden: int | None = None,
                 bn_group_size: int | None = None, seed: int = 0):
        check_queue(queue_size, global_batch)
        try:
            self.bn_groups = shuffle_bn.bn_groups(local_batch, bn_group_size)
        except ValueError as err:
            raise UserError(f"--bn-group-size {bn_group_size}: {err}") from None
        shuffle_bn.convert_group_bn(backbone)
        self.module = MoCoModule(backbone, feat_dim, hidden, queue_size)
        shuffle_bn.set_bn_groups(self.module, self.bn_groups)
        self.momentum = momentum
        self.temperature = temperature
        self.seed = seed
        self.micro_steps = 0  # forward passes so far: seeds the key shuffle of each step
        self._pending: list[torch.Tensor] = []  # keys of this optimiser step, enqueued after it
        # one process with one BN group: a shuffle cannot change the statistics, skip it
        self.shuffle = global_batch != local_batch or self.bn_groups > 1

    @classmethod
    def from_options(cls, backbone: nn.Module, options: PretrainOptions, global_batch: int,
                     local_batch: int) -> MoCo:
        return cls(backbone, global_batch=global_batch, local_batch=local_batch, queue_size=options.queue_size,
                   momentum=options.moco_momentum, temperature=options.temperature, feat_dim=options.feat_dim,
                   hidden=options.neck_hidden, bn_group_size=options.bn_group_size or None, seed=options.seed)

    def training_step(self, model, batch, ctx) -> StepOutput:
        view_q, view_k = split_views(batch)
        step = self.micro_steps
        self.micro_steps += 1
        with ctx.autocast():
            q = F.normalize(model(view_q).float(), dim=1) / self.temperature
            k_local, k_all = shuffle_bn.encode_shuffled(self.module.encoder_k, view_k, self.seed, step, self.shuffle)
            positive = (q * F.normalize(k_local.float(), dim=1)).sum(1)
            negatives = q @ self.module.queue.T
            # cross-entropy with the positive as class 0, without materialising [positive, negatives]
            loss = (torch.logaddexp(positive, torch.logsumexp(negatives.float(), dim=1)) - positive).mean()
        self._pending.append(F.normalize(k_all.float(), dim=1))
        return StepOutput(loss, q.shape[0])

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        queue, ptr = self.module.queue, self.module.queue_ptr
        index = (ptr + torch.arange(keys.shape[0], device=queue.device)) % queue.shape[0]
        queue.index_copy_(0, index, keys.to(queue.dtype))
        ptr.copy_((ptr + keys.shape[0]) % queue.shape[0])

    @torch.no_grad()
    def after_update(self, num_updates: int, ctx=None) -> None:
        """Enqueue this step's keys (after backward, which reads the queue: no copy of it is needed), then
        theta_k <- m theta_k + (1 - m) theta_q, parameters only (the key encoder's BN buffers are its own)."""
        for keys in self._pending:
            self._enqueue(keys)
        self._pending.clear()
        key = list(self.module.encoder_k.parameters())
        query = list(self.module.encoder_q.parameters())
        torch._foreach_lerp_(key, query, 1.0 - self.momentum)

    def state_dict(self) -> dict:
        return {"micro_steps": self.micro_steps}

    def load_state_dict(self, state: dict) -> None:
        self.micro_steps = int(state.get("micro_steps", 0))


def split_views(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """((view_1, view_2), labels) as collated from a two-view dataset, or an [N, 2, C, H, W] tensor."""
    views = batch[0] if isinstance(batch, (list, tuple)) else batch
    if isinstance(views, torch.Tensor):
        return views[:, 0], views[:, 1]
    return views[0], views[1]
