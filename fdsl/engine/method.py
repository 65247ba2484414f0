"""What one training step computes: the method interface of the one engine loop.

The loop (`fdsl.engine.loop.train_one_epoch`) owns what every method shares: moving the batch to the
device, autocast, backward through the AMP scaler, gradient accumulation, clipping, the optimiser step, the
LR schedule, logging, checkpoints and exact resume. A `Method` owns the forward pass, the loss, and whatever
state moves with training (a momentum encoder, a queue, cluster assignments).

Supervised classification (`Classification`) is one method; DeeperCluster, MoCo v2 and BYOL (fdsl.ssl)
are others. A method never runs its own loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar the loop back-propagates (before division for gradient accumulation)
    batch_size: int  # images this step on this rank, for images/s
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars, averaged per log interval


class Method:
    """Base class. `module` holds every tensor of the method (trained parameters, frozen momentum encoders,
    buffers such as a queue): it is what the checkpoint's `state_dict` stores, what the engine moves to the
    device, wraps in DistributedDataParallel (when it has trainable parameters) and optionally compiles.
    The wrapped module is handed back to `training_step` as `model`; call it for forward passes that train,
    and `self.module` for anything that must not go through DDP (no-grad encoders, evaluation)."""

    name = "method"
    module: torch.nn.Module
    find_unused_parameters = False  # DDP: some trained parameters may get no gradient in a step
    broadcast_buffers = True  # DDP: rank 0's buffers are copied to every rank before each forward

    def optimizer_params(self):
        """What the optimiser trains: a module (timm's create_optimizer_v2 then applies its no-weight-decay
        rules) or a list of param-group dicts. Default: the whole module."""
        return self.module

    def training_step(self, model: torch.nn.Module, batch, ctx) -> StepOutput:
        raise NotImplementedError

    def after_update(self, num_updates: int, ctx) -> None:
        """Called after every optimiser step (not every micro-batch): momentum encoders, schedules of tau."""

    def before_epoch(self, epoch: int, ctx) -> None:
        """Called before each epoch's batches are drawn (also when a run resumes in the middle of an epoch):
        the place to re-cluster and give the sampler new labels."""

    def after_epoch(self, epoch: int, ctx) -> dict:
        """Called after each epoch; returns extra per-epoch numbers for summary.csv and the trackers."""
        return {}

    def state_dict(self) -> dict:
        """Extra state that is not a tensor of `module` (plain values and tensors, loadable with
        torch.load(weights_only=True)), saved beside the weights in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Classification(Method):
    """Supervised training on (images, labels): cross-entropy (or the recipe's loss) with optional mixup,
    switched off from epoch ``mixup_off_epoch`` on when given (--mixup-off-epoch). With ``augment``
    (--gpu-augment), the batch's images are uint8 and augmented here, on the device, before mixup
    (fdsl.data.batch_augment.folder.DeviceAugment)."""

    name = "classification"

    def __init__(self, model: torch.nn.Module, loss_fn, mixup_fn=None, augment=None,
                 mixup_off_epoch: int | None = None):
        self.module = model
        self.loss_fn = loss_fn
        self.mixup_fn = mixup_fn
        self.mixup_active = True
        self.augment = augment
        self.mixup_off_epoch = mixup_off_epoch

    def before_epoch(self, epoch: int, ctx) -> None:
        if self.mixup_fn is not None and self.mixup_off_epoch:
            self.mixup_fn.mixup_enabled = epoch < self.mixup_off_epoch

    def training_step(self, model, batch, ctx) -> StepOutput:
        images, targets = batch
        if self.augment is not None:
            images = self.augment(images)
        if self.mixup_fn is not None and self.mixup_active:
            images, targets = self.mixup_fn(images, targets)
        with ctx.autocast():
            loss = self.loss_fn(model(images), targets)
        return StepOutput(loss, images.shape[0])
