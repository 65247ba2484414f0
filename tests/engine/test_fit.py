"""The shared epoch driver (engine.fit) with a toy method: exact mid-epoch resume, worker-count independence,
gradient accumulation, iteration budgets, and a stop on SIGUSR1 that can be resumed."""
import os
import signal

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fdsl.data import samplers
from fdsl.engine import fit, schedule
from fdsl.engine.data import TrainLoader
from fdsl.engine.distributed import DistInfo
from fdsl.engine.loop import LoopContext, train_one_epoch
from fdsl.engine.method import Method, StepOutput
from tests.helpers.runs import TINY_VIT, make_folder, run_cli


class NoisyPoints(Dataset):
    """Random-looking points whose 'augmentation' (added noise) draws from torch, numpy and random."""

    def __init__(self, n=48):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        import random

        import numpy as np

        noise = torch.randn(8) * 0.1 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        return self.x[i] + noise, self.y[i]


class Toy(Method):
    """A dropout MLP whose step also draws from the training process's RNG (dropout)."""

    def __init__(self):
        torch.manual_seed(1)
        self.module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                          torch.nn.Linear(16, 2))
        self.updates = 0

    def training_step(self, model, batch, ctx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return StepOutput(loss, x.shape[0], {"acc": (model(x).argmax(1) == y).float().mean()})

    def after_update(self, num_updates, ctx):
        self.updates = num_updates

    def state_dict(self):
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state.get("updates", 0)


class Data:
    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)


def make(tmp_path, name, workers=0, batch=4, **cfg):
    info = DistInfo()
    method = Toy()
    ds = NoisyPoints()
    data = Data()
    data.sampler = samplers.Resumable(DistributedSampler(ds, 1, 0, shuffle=True, seed=3), seed=3)
    loader = TrainLoader(DataLoader(samplers.Seeded(ds), batch_size=batch, sampler=data.sampler, drop_last=True,
                                    num_workers=workers), data.sampler, batch)
    opt = torch.optim.SGD(method.module.parameters(), lr=0.1, momentum=0.9)
    sched = schedule.Schedule(None, False, len(loader))
    config = fit.RunConfig(run_dir=str(tmp_path / name), arch="toy", seed=3, log_interval=1000, **cfg)
    return config, info, method, data, loader, opt, sched


def weights(tmp_path, name):
    return torch.load(tmp_path / name / "last.pth.tar", weights_only=True)


def assert_same(a, b):
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=0, atol=0, msg=key)


def test_mid_epoch_resume_equals_a_straight_run(tmp_path):
    fit.fit(*make(tmp_path, "straight", epochs=2))
    fit.fit(*make(tmp_path, "broken", epochs=2, pause_updates=17))  # 12 steps per epoch: stops at epoch 1 step 5
    ckpt = weights(tmp_path, "broken")
    assert ckpt["resume_at"] == [1, 5] and ckpt["epoch"] == 0 and ckpt["method"] == {"updates": 17}
    fit.fit(*make(tmp_path, "broken", epochs=2, resume="auto"))
    a, b = weights(tmp_path, "straight"), weights(tmp_path, "broken")
    assert a["epoch"] == b["epoch"] == 1 and "resume_at" not in b
    assert b["method"] == {"updates": 24}
    assert_same(a, b)


def test_augmentation_does_not_depend_on_the_worker_count(tmp_path):
    fit.fit(*make(tmp_path, "w0", epochs=1, workers=0))
    fit.fit(*make(tmp_path, "w2", epochs=1, workers=2))
    assert_same(weights(tmp_path, "w0"), weights(tmp_path, "w2"))


def test_iteration_budget_stops_inside_an_epoch_and_counts_optimiser_steps(tmp_path):
    row = fit.fit(*make(tmp_path, "budget", epochs=99, max_updates=7, accum_steps=2))
    ckpt = weights(tmp_path, "budget")
    assert ckpt["method"] == {"updates": 7}  # 7 optimiser steps = 14 micro-batches: epoch 1, step 2 of 12
    assert ckpt["epoch"] == 1 and row["epoch"] == 1 and "resume_at" not in ckpt


def test_gradient_accumulation_equals_the_larger_batch():
    """Two micro-batches of 4 with accum 2 give the same update as one batch of 8 (no dropout, mean loss)."""
    def run(batch, accum):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 2)
        method = Toy()
        method.module = model
        ds = NoisyPoints(16)
        data = [(ds.x[i:i + batch], ds.y[i:i + batch]) for i in range(0, 16, batch)]
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        ctx = LoopContext(info=DistInfo(), accum_steps=accum, log_interval=1000)
        train_one_epoch(method, model, data, opt, schedule.Schedule(None, False, 1), ctx, 0)
        return model.weight.detach().clone(), method.updates

    (w8, n8), (w4, n4) = run(8, 1), run(4, 2)
    assert n8 == n4 == 2
    torch.testing.assert_close(w8, w4)


def test_sigusr1_stops_with_a_resumable_checkpoint(tmp_path):
    config, info, method, data, loader, opt, sched = make(tmp_path, "signal", epochs=2)
    step = method.training_step

    def signalling_step(model, batch, ctx):
        if method.updates == 9:
            os.kill(os.getpid(), signal.SIGUSR1)
        return step(model, batch, ctx)

    method.training_step = signalling_step
    fit.fit(config, info, method, data, loader, opt, sched)
    ckpt = weights(tmp_path, "signal")
    assert ckpt["resume_at"] == [0, 10]
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handler is put back
    fit.fit(*make(tmp_path, "signal", epochs=2, resume="auto"))
    fit.fit(*make(tmp_path, "straight", epochs=2))
    assert_same(weights(tmp_path, "straight"), weights(tmp_path, "signal"))


def test_cli_resumes_mid_epoch_with_augmentation_mixup_and_drop_path(tmp_path):
    db = make_folder(tmp_path / "db", classes=3, per_class=8, gray=True)
    common = [db, *TINY_VIT, "-j", "1", "--log-interval", "100", "-b", "4", "--epochs", "2", "--opt", "adamw",
              "--lr", "1e-3", "--sched", "cosine_iter", "--warmup-epochs", "1", "--mixup", "0.8", "--cutmix", "1.0",
              "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--drop-path", "0.1", "--output", tmp_path]
    run_cli("pretrain", *common, "--experiment", "straight")
    run_cli("pretrain", *common, "--experiment", "broken", "--pause-updates", "3")  # 6 steps per epoch
    assert weights(tmp_path, "broken")["resume_at"] == [0, 3]
    run_cli("pretrain", *common, "--experiment", "broken", "--resume", "auto")
    assert_same(weights(tmp_path, "straight"), weights(tmp_path, "broken"))


@pytest.mark.parametrize("bad", ["missing"])
def test_resume_of_a_missing_file_is_one_clear_error(tmp_path, bad):
    with pytest.raises(fit.UserError, match="no such file"):
        fit.fit(*make(tmp_path, "x", epochs=1, resume=str(tmp_path / bad)))


def test_seeded_wraps_a_subset_and_forwards_plain_attributes():
    from torch.utils.data import Subset

    ds = Subset(NoisyPoints(10), [1, 3, 5])
    seeded = samplers.Seeded(ds)
    assert not hasattr(seeded, "__getitems__") and seeded.indices == [1, 3, 5]
    batch = next(iter(DataLoader(seeded, batch_size=3, sampler=[(0, 7), (1, 7), (2, 8)])))
    assert batch[0].shape == (3, 8)
    torch.testing.assert_close(batch[0][0], seeded[(0, 7)][0])  # the same seed, the same augmentation


def test_summary_takes_columns_that_appear_in_a_later_epoch(tmp_path):
    from fdsl.engine.logging import Summary

    summary = Summary(str(tmp_path / "summary.csv"))
    summary.append({"epoch": 0, "train_loss": 1.0})
    summary.append({"epoch": 1, "train_loss": 0.5, "nmi": 0.7})
    assert (tmp_path / "summary.csv").read_text().splitlines() == ["epoch,train_loss,nmi", "0,1.0,", "1,0.5,0.7"]
