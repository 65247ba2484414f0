"""BYOL: the tau schedule's values, the loss value against the spec, LARS exclusions, HPT-BN."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fdsl.ssl.backbone import train_only_batchnorm
from fdsl.ssl.byol import BYOL, byol_loss, tau_at
from fdsl.ssl.moco import MoCo
from fdsl.ssl.optim import build_optimizer, split_decay
from tests.helpers.ssl_nets import TinyNet, ctx

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tau_follows_the_cosine_from_base_to_one():
    assert tau_at(0, 1000) == pytest.approx(0.99)
    assert tau_at(500, 1000) == pytest.approx(0.995)
    assert tau_at(1000, 1000) == pytest.approx(1.0)
    assert tau_at(250, 1000) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert tau_at(0, 1000, base=0.996) == pytest.approx(0.996)


def test_target_update_uses_the_global_step_count():
    torch.manual_seed(0)
    method = BYOL(TinyNet(), total_updates=100, proj_dim=4, hidden=8)
    online, target = method.module.online_net, method.module.target_net
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.parameters()]
    method.after_update(51, ctx())  # the 51st optimiser step: k = 50 of K = 100
    assert method.tau == pytest.approx(0.995) and method.updates == 51
    for old, new, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(new, 0.995 * old + 0.005 * o)
    method.load_state_dict(method.state_dict())
    assert method.tau == pytest.approx(0.995)


def test_loss_is_two_minus_two_cosine_per_direction_averaged_over_the_batch():
    torch.manual_seed(0)
    p, z = torch.randn(6, 5), torch.randn(6, 5)
    spec = -2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum() / 6  # published, per view pair
    assert byol_loss(p, z).item() == pytest.approx(2 + spec.item(), abs=1e-6)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)
    method = BYOL(TinyNet(), total_updates=10, proj_dim=4, hidden=8)
    out = method.training_step(method.module, ((torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)), None), ctx())
    assert 0.0 <= out.loss.item() <= 8.0  # symmetrised: the sum of both directions, not their mean


def test_lars_excludes_batchnorm_and_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 3))
    decayed, excluded = split_decay(model, 1e-6)
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert {id(p) for p in excluded["params"]} == {id(model[1].weight), id(model[1].bias), id(model[3].bias)}
    assert excluded["weight_decay"] == 0
    opt = build_optimizer("lars", model, lr=0.3, momentum=0.9, weight_decay=1e-6, lars_eta=0.001)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    opt.step()
    for name, p in model.named_parameters():
        w, g = before[name], grads[name]
        if name in ("1.weight", "1.bias", "3.bias"):  # local lr 1, no decay
            expected = w - 0.3 * g
        else:
            trust = 0.001 * w.norm() / (g.norm() + 1e-6 * w.norm())
            expected = w - 0.3 * trust * (g + 1e-6 * w)
        torch.testing.assert_close(p.detach(), expected, msg=name)


def test_hpt_bn_changes_only_batchnorm_tensors():
    torch.manual_seed(0)
    backbone = TinyNet()
    trainable = train_only_batchnorm(backbone)
    assert trainable == ["bn1.weight", "bn1.bias"]
    method = MoCo(backbone, global_batch=4, local_batch=4, queue_size=8, feat_dim=8)
    before = {k: v.clone() for k, v in method.module.backbone.state_dict().items()}
    opt = build_optimizer("sgd", method.module, lr=0.5, momentum=0.9, weight_decay=1e-4)
    for i in range(2):
        out = method.training_step(method.module, (torch.randn(4, 2, 3, 8, 8), None), ctx())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.after_update(i + 1, ctx())
    after = method.module.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"}
