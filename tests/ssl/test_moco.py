"""MoCo v2: grouped BN, the queue, shuffle-BN on 2 gloo ranks == one process with 2 BN groups, momentum."""
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from fdsl.errors import UserError
from fdsl.ssl.moco import MoCo, check_queue
from fdsl.ssl.shuffle_bn import GroupBatchNorm, convert_group_bn, set_bn_groups
from tests.helpers.ssl_nets import TinyNet, ctx

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones


def test_group_batchnorm_is_batchnorm_per_chunk():
    torch.manual_seed(0)
    x = torch.randn(12, 4, 5, 5) * 3 + 1
    plain = nn.BatchNorm2d(4)
    nn.init.uniform_(plain.weight)
    grouped = convert_group_bn(nn.Sequential(plain))[0]
    assert isinstance(grouped, GroupBatchNorm)
    grouped.groups = 3
    reference = [nn.BatchNorm2d(4) for _ in range(3)]
    for ref in reference:
        ref.load_state_dict(plain.state_dict())
    out = grouped(x)
    expected = torch.cat([ref(chunk) for ref, chunk in zip(reference, x.chunk(3))])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grouped.running_mean, torch.stack([r.running_mean for r in reference]).mean(0))
    torch.testing.assert_close(grouped.running_var, torch.stack([r.running_var for r in reference]).mean(0))
    grouped.eval()
    torch.testing.assert_close(grouped(x), nn.functional.batch_norm(
        x, grouped.running_mean, grouped.running_var, grouped.weight, grouped.bias, False, 0.0, grouped.eps))


def test_queue_size_must_divide_by_the_global_batch():
    check_queue(65536, 256)
    with pytest.raises(UserError, match="nearest valid sizes: 65280 or 65620"):
        check_queue(65536, 340)


def test_loss_is_infonce_over_the_queue_and_keys_are_enqueued_after_the_step():
    torch.manual_seed(0)
    method = MoCo(TinyNet(), global_batch=4, local_batch=4, queue_size=8, feat_dim=8, hidden=8, temperature=0.2)
    queue0 = method.module.queue.clone()
    assert torch.allclose(queue0.norm(dim=1), torch.ones(8))
    x = torch.randn(4, 2, 3, 8, 8)
    loss = method.training_step(method.module, (x, None), ctx()).loss
    with torch.no_grad():
        q = nn.functional.normalize(method.module.encoder_q(x[:, 0]), dim=1)
        k = nn.functional.normalize(method.module.encoder_k(x[:, 1]), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue0.T], 1) / 0.2
    torch.testing.assert_close(loss, nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long)))
    assert torch.equal(method.module.queue, queue0)  # backward still reads the queue
    method.after_update(1, ctx())
    q = method.module.queue
    assert int(method.module.queue_ptr) == 4
    assert torch.equal(q[4:], queue0[4:]) and not torch.equal(q[:4], queue0[:4])
    with torch.no_grad():
        keys = nn.functional.normalize(method.module.encoder_k(x[:, 1]), dim=1)
    torch.testing.assert_close(q[:4], keys)
    for step in range(2):
        method.training_step(method.module, (x, None), ctx())
        method.after_update(step + 2, ctx())
    assert int(method.module.queue_ptr) == 4  # 12 keys into 8 slots: wrapped once


def test_key_encoder_follows_the_query_encoder_by_momentum():
    torch.manual_seed(0)
    method = MoCo(TinyNet(), global_batch=4, local_batch=4, queue_size=8, momentum=0.9, feat_dim=8)
    q = method.module.encoder_q
    k = method.module.encoder_k
    assert all(torch.equal(a, b) for a, b in zip(q.parameters(), k.parameters()))
    assert not any(p.requires_grad for p in k.parameters())
    with torch.no_grad():
        for p in q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in k.parameters()]
    method.after_update(1, ctx())
    for old, new, query in zip(before, k.parameters(), q.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * query)


def _steps(method, optimizer, batches, model=None):
    model = model or method.module
    losses = []
    for i, x in enumerate(batches):
        out = method.training_step(model, (x, None), ctx())
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.after_update(i + 1, ctx())
        losses.append(out.loss.detach())
    return losses


def _rank(rank, world, init_file, batches, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    n = batches[0].shape[0] // world
    method = MoCo(TinyNet(), global_batch=n * world, local_batch=n, queue_size=16, feat_dim=8, bn_group_size=n)
    model = nn.parallel.DistributedDataParallel(method.module)
    optimizer = torch.optim.SGD(method.module.parameters(), lr=0.5, momentum=0.9)
    losses = _steps(method, optimizer, [b[rank * n:(rank + 1) * n] for b in batches], model)
    loss = torch.stack(losses)
    dist.all_reduce(loss)
    if rank == 0:
        torch.save({"module": method.module.state_dict(), "loss": loss / world}, os.path.join(out_dir, "dist.pt"))
    dist.destroy_process_group()


def test_shuffle_bn_on_two_ranks_equals_two_bn_groups_on_one_process(tmp_path):
    """The queue update and shuffle-BN on 2 gloo ranks; and one process with 2 BN groups is the same run."""
    torch.manual_seed(1)
    batches = [torch.randn(8, 2, 3, 8, 8) for _ in range(3)]
    mp.start_processes(_rank, args=(2, str(tmp_path / "init"), batches, str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    dist_run = torch.load(tmp_path / "dist.pt", weights_only=True)

    torch.manual_seed(0)
    method = MoCo(TinyNet(), global_batch=8, local_batch=8, queue_size=16, feat_dim=8, bn_group_size=4)
    assert method.bn_groups == 2
    optimizer = torch.optim.SGD(method.module.parameters(), lr=0.5, momentum=0.9)
    losses = torch.stack(_steps(method, optimizer, batches))
    torch.testing.assert_close(losses, dist_run["loss"], rtol=1e-4, atol=1e-5)
    state = method.module.state_dict()
    assert int(dist_run["module"]["queue_ptr"]) == int(state["queue_ptr"]) == 8  # 3 x 8 keys into 16 slots
    for key, value in state.items():
        if "running" in key or "num_batches" in key:
            continue  # BN running statistics are per rank (rank 0's are saved) vs averaged over groups
        torch.testing.assert_close(value, dist_run["module"][key], rtol=1e-4, atol=1e-5, msg=key)

    torch.manual_seed(0)  # without the shuffle the queries see their own keys' BN statistics: different run
    plain = MoCo(TinyNet(), global_batch=8, local_batch=8, queue_size=16, feat_dim=8, bn_group_size=0)
    set_bn_groups(plain.module, 2)
    plain.shuffle = False
    other = torch.stack(_steps(plain, torch.optim.SGD(plain.module.parameters(), lr=0.5, momentum=0.9), batches))
    assert not torch.allclose(other, losses, atol=1e-4)
