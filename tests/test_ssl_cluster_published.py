"""DeeperCluster as the published code ran it (facebookresearch/DeeperCluster, read for facts only): the
gradients of the heads, the work in an epoch, the PCA sample, the empty-cluster rule, the sobel2RGB fold and
the checkpoint layout. Where the published code runs on a CPU with only torch, it is run side by side from a
fetched copy named by DEEPERCLUSTER_SRC (skipped without it); elsewhere a small reference of its math."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fdsl.engine.distributed import DistInfo
from fdsl.ssl.deepercluster import DeeperCluster, Layout

pytestmark = pytest.mark.usefixtures("one_thread")


class Trunk(nn.Linear):
    num_features = 5


class Ctx:
    info = DistInfo()

    @staticmethod
    def autocast():
        return contextlib.nullcontext()


def test_each_sub_head_gets_the_mean_over_its_own_group():
    """One mixed batch of 4 groups of unequal sizes (one group absent): every sub-class head's gradient equals
    the mean over its own samples (the published per-group DDP), the trunk's and the super-class head's the
    mean over the whole batch (the published DDP over all ranks)."""
    torch.manual_seed(0)
    layout = Layout(k=12, super_classes=4, rotnet=False)  # 4 groups, 3 sub-classes in each
    method = DeeperCluster(Trunk(7, 5), layout, None, None, None, None, "unused", DistInfo())
    heads = method.module
    images = torch.randn(13, 7)
    groups = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 3, 3])  # group 2 absent
    subs = torch.randint(0, 3, (13,))
    out = method.training_step(heads, (images, groups, subs), Ctx())
    out.loss.backward()
    got = {name: p.grad.clone() for name, p in heads.named_parameters()}

    ref = {name: torch.zeros_like(p) for name, p in heads.named_parameters()}  # published, group by group
    n = images.shape[0]
    for g in range(4):
        mine = groups == g
        if not mine.any():
            continue
        head = nn.Linear(5, 3)
        with torch.no_grad():
            head.weight.copy_(heads.sub_weight[g])
            head.bias.copy_(heads.sub_bias[g])
        trunk_params = list(heads.trunk.parameters()) + list(heads.super_head.parameters())
        feats = F.relu(heads.trunk(images[mine]))
        sub_loss = F.cross_entropy(head(feats), subs[mine])  # the group's own DDP: mean over its samples
        super_loss = F.cross_entropy(heads.super_head(feats), groups[mine])
        head_grads = torch.autograd.grad(sub_loss, [head.weight, head.bias], retain_graph=True)
        ref["sub_weight"][g], ref["sub_bias"][g] = head_grads
        # trunk and super head: DDP over all ranks, the mean over the whole batch
        shared = torch.autograd.grad((sub_loss + super_loss) * mine.sum() / n, trunk_params)
        names = [f"trunk.{k}" for k, _ in heads.trunk.named_parameters()] + ["super_head.weight", "super_head.bias"]
        for name, grad in zip(names, shared):
            ref[name] += grad
    for name, grad in got.items():
        assert torch.allclose(grad, ref[name], atol=1e-6, rtol=1e-5), name
    # the loss logged is unchanged: the plain mean over the batch
    assert torch.allclose(out.logs["loss_sub"], F.cross_entropy(
        heads.sub_logits(F.relu(heads.trunk(images)), groups), subs))


def test_the_fix_is_exactly_s_times_at_equal_groups():
    """With 16 equal groups (the paper's super_classes), the old batch mean gave each head 1/16 of its
    published gradient; the head's gradient is now 16 times that, the trunk's unchanged."""
    torch.manual_seed(1)
    layout = Layout(k=8, super_classes=16, rotnet=True)  # 4 super-clusters x 2 sub-classes, 16 heads
    method = DeeperCluster(Trunk(7, 5), layout, None, None, None, None, "unused", DistInfo())
    heads = method.module
    images, groups = torch.randn(32, 7), torch.arange(16).repeat(2)
    subs = torch.randint(0, 2, (32,))
    method.training_step(heads, (images, groups, subs), Ctx()).loss.backward()
    fixed = {k: p.grad.clone() for k, p in heads.named_parameters()}
    heads.zero_grad()
    s_logits, sub_logits = heads(images, groups)  # the old step: one mean over the mixed batch
    (F.cross_entropy(s_logits, groups) + F.cross_entropy(sub_logits, subs)).backward()
    for name, p in heads.named_parameters():
        ratio = 16.0 if name.startswith("sub_") else 1.0
        assert torch.allclose(fixed[name], ratio * p.grad, atol=1e-7, rtol=1e-5), name


def published_check_parameters(size_dataset, batch_size, world_size, nsc, super_classes):
    """main.py check_parameters (utils.py:127-134): images per training group per epoch; every one of the
    `super_classes` groups draws that many (trainer.py:91-97)."""
    div = batch_size * world_size
    size_dataset = min(size_dataset, 95920149) // div * div
    epoch_size = size_dataset // nsc // 4 // div * div
    return epoch_size * super_classes


@pytest.mark.parametrize("k,super_classes,rotnet", [(10, 1, False), (8, 4, False), (8, 4, True), (32, 16, True),
                                                    (1, 4, True)])
@pytest.mark.parametrize("n,batch,world", [(1000, 8, 1), (1024, 8, 1), (12345, 48, 4), (95_920_149, 48, 64)])
def test_an_epoch_is_the_published_amount_of_work(k, super_classes, rotnet, n, batch, world):
    from fdsl.ssl.deepercluster import published_epoch_images

    layout = Layout(k, super_classes, rotnet)
    got = published_epoch_images(n, layout, batch * world)
    published = published_check_parameters(n, batch, world, layout.nsc, super_classes)
    assert got % (batch * world) == 0
    assert published <= got < published + super_classes * batch * world  # the rounding, once vs per group
    if (n // (batch * world) * batch * world // layout.nsc // 4) % (batch * world) == 0:
        assert got == published  # no rounding in a group: the same number
    if rotnet:  # the data set, to a few global batches
        assert n - 4 * layout.nsc * batch * world <= got <= n
    else:  # a quarter of it (the published hard-coded // 4)
        assert got <= n // 4
