"""DeeperCluster as the published code ran it (facebookresearch/DeeperCluster, read for facts only): the
gradients of the heads, the work in an epoch, the PCA sample, the empty-cluster rule, the sobel2RGB fold and
the checkpoint layout. Where the published code runs on a CPU with only torch, it is run side by side from a
fetched copy named by DEEPERCLUSTER_SRC (skipped without it); elsewhere a small reference of its math."""
import contextlib

import numpy as np
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
@pytest.mark.parametrize("n,batch,world", [(1000, 8, 1), (1024, 8, 1), (600, 8, 1), (12345, 48, 4),
                                           (95_920_149, 48, 64)])
def test_an_epoch_is_the_published_amount_of_work(k, super_classes, rotnet, n, batch, world):
    from fdsl.ssl.deepercluster import published_epoch_images

    layout = Layout(k, super_classes, rotnet)
    got = published_epoch_images(n, layout, batch * world)
    assert got == published_check_parameters(n, batch, world, layout.nsc, super_classes)
    assert got % (batch * world) == 0
    if rotnet:  # the data set, to a few global batches
        assert n - 4 * layout.nsc * batch * world <= got <= n
    else:  # a quarter of it (the published hard-coded // 4)
        assert got <= n // 4


# --- checkpoints: the published layout ----------------------------------------------------------------------

def _stepped_heads(sobel=True, width=0.0625, img_size=32):
    """A ClusterHeads on the VGG16 trunk after one SGD step (so every tensor has momentum)."""
    from fdsl.models.vgg import create_vgg16
    from fdsl.ssl.deepercluster import ClusterHeads

    torch.manual_seed(0)
    trunk = create_vgg16(sobel=sobel, img_size=img_size, width=width)
    heads = ClusterHeads(trunk, trunk.num_features, 8, 3)
    opt = torch.optim.SGD([p for p in heads.parameters() if p.requires_grad], lr=0.1, momentum=0.9,
                          weight_decay=1e-5)
    groups = torch.arange(8)
    s_logits, sub_logits = heads(torch.randn(8, 3, img_size, img_size), groups)
    (F.cross_entropy(s_logits, groups) + F.cross_entropy(sub_logits, groups % 3)).backward()
    opt.step()
    return heads, opt


def test_published_layout_round_trip(tmp_path):
    """published files -> fdsl (module + optimizer) -> published files: the same tensors, key for key; and
    the layout is the published one (module.* trunk keys, DDP-prefixed heads, one file per group)."""
    from fdsl.ssl.published_ckpt import (
        from_published,
        read_published,
        to_published,
        trainable_names,
        write_published,
    )

    heads, opt = _stepped_heads()
    write_published(str(tmp_path), heads, opt, epoch=3, archive=True)
    main, groups = read_published(str(tmp_path), 8)
    assert (tmp_path / "checkpoints" / "checkpoint2.pth.tar").is_file()
    assert main["epoch"] == 3 and main["start_iter"] == 0
    assert "module.body.features.0.weight" in main["state_dict"] and "module.sobel.1.weight" in main["state_dict"]
    assert not any(k.startswith("module.trunk") for k in main["state_dict"])
    assert set(main["pred_layer_state_dict"]) == set(groups[5]["state_dict"]) == {"module.weight", "module.bias"}
    assert groups[5]["state_dict"]["module.weight"].shape == (3, heads.sub_weight.shape[-1])

    names = trainable_names(heads)
    sd, opt_state = from_published(main, groups, names)
    fresh, fresh_opt = _stepped_heads()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(sd, strict=True)
    fresh_opt.load_state_dict(opt_state)
    for key, value in heads.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    main2, groups2 = to_published(fresh.state_dict(), names, fresh_opt.state_dict(), 3)

    def same(a, b, where):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), where
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), where
            for k in a:
                same(a[k], b[k], f"{where}.{k}")
        else:
            assert a == b, where

    same(main, main2, "checkpoint")
    for g in range(8):
        same(groups[g], groups2[g], f"{g}-pred_layer")
    assert len(main["optimizer"]["state"]) == len([n for n in names if n.startswith("trunk.")])


def published_source():
    import os

    root = os.environ.get("DEEPERCLUSTER_SRC")
    if not root or not os.path.isfile(os.path.join(root, "src", "model", "pretrain.py")):
        pytest.skip("set DEEPERCLUSTER_SRC to an extracted copy of facebookresearch/DeeperCluster")
    return root


@pytest.fixture
def published(monkeypatch):
    """The published package `src` importable (pandas, used only by its logger, stubbed when absent)."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    root = published_source()
    monkeypatch.syspath_prepend(root)
    if importlib.util.find_spec("pandas") is None:
        stub = types.ModuleType("pandas")
        stub.__spec__ = importlib.machinery.ModuleSpec("pandas", None)
        monkeypatch.setitem(sys.modules, "pandas", stub)
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        monkeypatch.delitem(sys.modules, name)
    return root


def test_published_loaders_read_fdsl_checkpoints(published, tmp_path):
    """The published load_pretrained (what eval_linear / eval_voc_classif / eval_pretrain call) and main.py's
    restart_from_checkpoint read fdsl's files: same weights, heads and momentum. Full-size VGG16 (the
    published model is not scalable)."""
    from argparse import Namespace

    from src.model.model_factory import model_factory, sgd_optimizer
    from src.model.pretrain import load_pretrained
    from src.utils import restart_from_checkpoint

    from fdsl.ssl.published_ckpt import write_published

    heads, opt = _stepped_heads(width=1.0, img_size=224)
    write_published(str(tmp_path), heads, opt, epoch=1, archive=False)
    args = Namespace(pretrained=str(tmp_path / "checkpoint.pth.tar"), world_size=1, dump_path=str(tmp_path))

    net = model_factory(True)
    load_pretrained(net, args)  # strict load into net.body
    for key, value in heads.trunk.body.state_dict().items():
        assert torch.equal(net.body.state_dict()[key], value), key

    ddp = nn.Module()  # main.py's DDP wrappers: module.* keys
    ddp.module = model_factory(True)
    pred, sub = nn.Module(), nn.Module()
    pred.module, sub.module = nn.Linear(heads.trunk.num_features, 8), nn.Linear(heads.trunk.num_features, 3)
    optimizers = [sgd_optimizer(m, 0.1, 1e-5) for m in (ddp, pred, sub)]
    run = {"epoch": 0, "start_iter": 0}
    restart_from_checkpoint(args, run_variables=run, state_dict=ddp, optimizer=optimizers[0],
                            pred_layer_state_dict=pred, optimizer_pred_layer=optimizers[1])
    restart_from_checkpoint(args, ckp_path=str(tmp_path / "5-pred_layer.pth.tar"), state_dict=sub,
                            optimizer=optimizers[2])
    assert run == {"epoch": 1, "start_iter": 0}
    assert torch.equal(ddp.module.sobel[1].weight, heads.trunk.sobel[1].weight)
    assert torch.equal(pred.module.weight, heads.super_head.weight)
    assert torch.equal(sub.module.weight, heads.sub_weight[5]) and torch.equal(sub.module.bias, heads.sub_bias[5])
    momentum = opt.state[heads.sub_weight]["momentum_buffer"][5]
    assert torch.equal(optimizers[2].state[sub.module.weight]["momentum_buffer"], momentum)
    first_conv = next(p for p in ddp.module.parameters() if p.requires_grad)
    assert torch.equal(optimizers[0].state[first_conv]["momentum_buffer"],
                       opt.state[heads.trunk.body.features[0].weight]["momentum_buffer"])


# --- k-means: the published empty-cluster rule ----------------------------------------------------------------

def _empty_prone(n=96, d=8, k=12, far=3, seed=0):
    """L2-normalised points and an initialisation whose last `far` centroids attract no point."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    init = x[rng.choice(n, k, replace=False)].copy()
    init[k - far:] = 50.0  # far from the unit sphere: empty at the first pass
    return x, init


def _fdsl_published_kmeans(monkeypatch, x, init, niter, world_id):
    from fdsl.ssl.kmeans import driver

    monkeypatch.setattr(driver, "initial_centroids", lambda *a, **k: init.copy())
    options = driver.KMeansOptions(niter=niter, seed=0, backend="torch", empty_rule="published", world_id=world_id)
    return driver.kmeans(x, init.shape[0], options)


def test_published_empty_rule_splits_one_donor_per_pass(monkeypatch):
    """The reference from distributed_kmeans.py:259-279: the donor is the re-seeded pick among the non-empty
    clusters, the same for every empty cluster; it keeps half of its points each time, the first ones move."""
    x, init = _empty_prone()
    dist2 = ((x[:, None] - init[None]) ** 2).sum(-1)
    first = dist2.argmin(1)
    nonempty = np.flatnonzero(np.bincount(first, minlength=12) > 0)
    for world_id in (0, 5, 3):  # donors of 16, 15 and 4 points
        donor = nonempty[np.random.RandomState(world_id).randint(len(nonempty))]
        res = _fdsl_published_kmeans(monkeypatch, x, init, 0, world_id)  # one pass: assign, then split
        labels = first.copy()
        members = np.flatnonzero(labels == donor)
        for empty in (9, 10, 11):  # the same donor each time: its first count - count // 2 points move
            count = members.size
            labels[members[:count - count // 2]] = empty
            members = np.flatnonzero(labels == donor)
        for empty in (9, 10, 11):
            assert np.allclose(res.centroids[empty], init[donor], atol=1e-6)
        assert res.counts.min() >= 1
        if members.size:
            assert np.array_equal(res.labels, labels)
        else:  # 4 -> 2 -> 1 -> 0: the published rule empties the donor; fdsl then refills it, nothing else moves
            refilled = res.labels == donor
            assert refilled.any() and np.array_equal(res.labels[~refilled], labels[~refilled])


def test_published_kmeans_side_by_side(monkeypatch, published, tmp_path):
    """The published distributed_kmeans (torch E-step, one gloo process, .cuda() as a no-op) and fdsl's
    kmeans(empty_rule='published') from the same initial centroids: the same labels and centroids. One pass
    (the split centroids differ by 1e-7, so later passes hinge on float rounding of two distance formulas)."""
    from argparse import Namespace

    import torch.distributed as dist
    from src.distributed_kmeans import distributed_kmeans

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    x, init = _empty_prone()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        args = Namespace(use_faiss=False, niter=0, dim_pca=x.shape[1], batch_size=16, dump_path=str(tmp_path))
        for world_id in (0, 5):  # donors with points to spare (test_published_empty_rule_... for the rest)
            labels, centroids = distributed_kmeans(args, x.shape[0], init.shape[0], torch.from_numpy(x), 0, 1,
                                                   torch.from_numpy(init.copy()), world_id=world_id)
            res = _fdsl_published_kmeans(monkeypatch, x, init, 0, world_id)
            assert np.array_equal(res.labels, labels.astype(np.int64)), world_id
            assert np.allclose(res.centroids, centroids.numpy(), atol=1e-7, rtol=0)
            assert len(set(res.labels.tolist())) == 12  # the three empties took points of the one donor
    finally:
        dist.destroy_process_group()


# --- eval_pretrain: the sobel2RGB fold --------------------------------------------------------------------------

def _folds(seed=5):
    import copy

    from fdsl.models.vgg import create_vgg16, sobel2rgb

    torch.manual_seed(0)
    net = create_vgg16(sobel=True, img_size=32, width=1.0)  # 64 channels in conv1, as published
    exact, published = copy.deepcopy(net), copy.deepcopy(net)
    sobel2rgb(exact)
    torch.manual_seed(seed)
    sobel2rgb(published, published=True)
    return net, exact.body.features[0], published.body.features[0]


def test_published_sobel2rgb_folds_taps_0_to_2_only():
    """model_factory.py sobel2RGB loops range(3) over the 5x5 kernel: taps [0:3, 0:3] are the fold, the rest
    is the new conv's init from the global generator (the same draw as a fresh Conv2d after the same seed)."""
    _, exact, published = _folds()
    assert torch.equal(published.weight[:, :, :3, :3], exact.weight[:, :, :3, :3])
    torch.manual_seed(5)
    fresh = nn.Conv2d(3, 64, kernel_size=5, padding=1)
    assert torch.equal(published.weight[:, :, 3:], fresh.weight[:, :, 3:])
    assert torch.equal(published.weight[:, :, :, 3:], fresh.weight[:, :, :, 3:])
    assert not torch.allclose(published.weight[:, :, 3:], exact.weight[:, :, 3:])
    assert torch.equal(published.bias, exact.bias)


def test_published_sobel2rgb_side_by_side(published):
    """The published sobel2RGB on the same weights, after the same seed: the same 5x5 conv."""
    import copy

    from src.model.model_factory import Net, sobel2RGB

    net, _, fdsl_fold = _folds()
    theirs = Net(nn.ConstantPad2d(2, 0.0), True, copy.deepcopy(net.body), None)
    theirs.sobel.load_state_dict(net.sobel.state_dict())
    torch.manual_seed(5)
    sobel2RGB(theirs)
    assert theirs.sobel is None
    assert torch.allclose(theirs.body.features[0].weight, fdsl_fold.weight, atol=1e-6, rtol=1e-5)
    assert torch.equal(theirs.body.features[0].bias, fdsl_fold.bias)


# --- PCA: the published sample and fit ----------------------------------------------------------------------------

def test_pca_sample_is_the_published_one():
    """distributed_kmeans.py:36-43: int(D(D-1)/2 / batch / world) batches per rank, the first ones of each
    rank's share, capped by the share: 8,386,560 images for fc7 at the paper's 64 x 48."""
    from fdsl.ssl.clustering import RoundConfig, pca_rows, published_pca_rows

    assert published_pca_rows(4096, 48, 64) * 64 == 8_386_560
    cfg = RoundConfig(k=4, nsc=1, dim_pca=4, batch_size=8)
    assert pca_rows(500, 16, cfg, DistInfo(), 0) == slice(0, 120)  # 16 x 15 / 2 = 120 = 15 x 8, the first rows
    assert pca_rows(100, 16, cfg, DistInfo(), 0) is None  # the whole share
    two = DistInfo(rank=1, world_size=2)  # int(120 / 8 / 2) = 7 batches per rank
    assert pca_rows(500, 16, cfg, two, 0) == slice(0, 56)
    random = RoundConfig(k=4, nsc=1, dim_pca=4, batch_size=8, pca_samples=50)  # fdsl's random sample
    rows = pca_rows(500, 16, random, DistInfo(), 0)
    assert rows.size == 50 and not np.array_equal(rows, np.arange(50))


def test_pca_matches_the_published_fit(published):
    """src/utils.py PCA.train_pca (numpy eigh of X^T X / n, floor max x 1e-5, whitening 0.5) and fdsl's
    fit_pca on the same features: the same whitened, L2-normalised rows (up to each component's sign)."""
    from src.utils import PCA, normalize

    from fdsl.ssl.pca import fit_pca

    rng = np.random.default_rng(0)
    feats = (rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12)) * [5] + 3).astype(np.float32)
    feats[:, -1] = feats[:, 0]  # a zero eigenvalue: the floor is used
    ours = fit_pca(feats, 6)
    mean = feats.mean(0).astype(np.float32)
    theirs = PCA(dim=6, whit=0.5)
    centred = feats - mean
    theirs.train_pca(centred.T @ centred / centred.shape[0])
    theirs.mean = mean
    want = normalize(theirs.apply(feats.copy()))
    got = ours.apply(feats)
    signs = np.sign((got * want).sum(0))
    assert np.allclose(got * signs, want, atol=2e-4)


def test_eval_pretrain_reads_the_same_order_every_epoch_as_published():
    """eval_pretrain.py:196 builds a fresh DistributedSampler each epoch (epoch 0): the same order every
    epoch. fdsl's default keeps that order; the augmentation seeds still change; --reshuffle true draws anew."""
    from fdsl.eval import data as ed
    from fdsl.recipes.eval_pretrain import SameOrder

    loader = ed.train_loader(list(range(40)), 4, 0, DistInfo(), seed=3)
    same = SameOrder(loader)
    orders = []
    for epoch in (0, 1):
        same.set_epoch(epoch)
        orders.append(list(loader.sampler))
    assert [i for i, _ in orders[0]] == [i for i, _ in orders[1]]
    assert [s for _, s in orders[0]] != [s for _, s in orders[1]]
    ed.Epochs(loader).set_epoch(1)
    assert [i for i, _ in loader.sampler] != [i for i, _ in orders[0]]


def test_convert_an_fdsl_checkpoint_to_the_published_layout(fdsl_cli, tmp_path):
    """`fdsl deepercluster-convert` on an fdsl checkpoint (end of epoch 2) writes what a run writes itself
    after 3 epochs; anything else is one error line."""
    from fdsl.ssl.published_ckpt import read_published, write_published

    heads, opt = _stepped_heads()
    torch.save({"arch": "deepercluster-vgg16", "state_dict": heads.state_dict(), "optimizer": opt.state_dict(),
                "epoch": 2}, tmp_path / "last.pth.tar")
    code, out, err = fdsl_cli("deepercluster-convert", tmp_path / "last.pth.tar", tmp_path / "converted")
    assert code == 0, err
    assert "8 sub-class head files" in out
    write_published(str(tmp_path / "direct"), heads, opt, epoch=3, archive=False)
    (main_a, heads_a), (main_b, heads_b) = (read_published(str(tmp_path / d), 8) for d in ("converted", "direct"))
    assert main_a["epoch"] == main_b["epoch"] == 3
    for key in ("state_dict", "pred_layer_state_dict"):
        assert all(torch.equal(main_a[key][k], main_b[key][k]) for k in main_b[key])
    assert main_a["optimizer"]["state"].keys() == main_b["optimizer"]["state"].keys()
    assert all(torch.equal(main_a["optimizer"]["state"][i]["momentum_buffer"], v["momentum_buffer"])
               for i, v in main_b["optimizer"]["state"].items())
    assert torch.equal(heads_a[7]["optimizer"]["state"][0]["momentum_buffer"],
                       heads_b[7]["optimizer"]["state"][0]["momentum_buffer"])
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pth")
    code, _, err = fdsl_cli("deepercluster-convert", tmp_path / "other.pth", tmp_path / "x")
    assert code == 2 and "not an fdsl DeeperCluster checkpoint" in err and "Traceback" not in err


def _two_rank_grads(rank, world, init, out):
    """One rank of the 2-process gloo check: DDP over ClusterHeads, this rank's half of the batch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        method, images, groups, subs = _two_rank_problem()
        ddp = DistributedDataParallel(method.module)
        ctx = Ctx()
        ctx.info = DistInfo(rank=rank, world_size=world)
        mine = slice(rank * 8, rank * 8 + 8)
        method.training_step(ddp, (images[mine], groups[mine], subs[mine]), ctx).loss.backward()
        torch.save({k: p.grad for k, p in method.module.named_parameters()}, f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _two_rank_problem():
    torch.manual_seed(0)
    method = DeeperCluster(Trunk(7, 5), Layout(k=12, super_classes=4, rotnet=False), None, None, None, None,
                           "unused", DistInfo())
    groups = torch.tensor([0, 0, 0, 0, 0, 1, 1, 3, 0, 2, 2, 2, 2, 2, 2, 3])  # unequal, different per rank
    return method, torch.randn(16, 7), groups, torch.randint(0, 3, (16,))


@pytest.mark.slow
def test_two_processes_give_the_one_process_gradients(tmp_path):
    """The group counts are global: two gloo processes (DDP, 8 samples each, groups unevenly spread) give every
    tensor the gradient that one process computes on the 16 samples (itself the per-group reference above)."""
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_grads, args=(2, f"file://{tmp_path}/pg", str(tmp_path / "g")), nprocs=2, join=True)
    method, images, groups, subs = _two_rank_problem()
    method.training_step(method.module, (images, groups, subs), Ctx()).loss.backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"g-{rank}.pt", weights_only=True)
        for name, p in method.module.named_parameters():
            assert torch.allclose(got[name], p.grad, atol=1e-6, rtol=1e-5), (rank, name)
