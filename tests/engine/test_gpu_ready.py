"""The CUDA paths checked on CPU: NCCL bound to the rank's GPU, the class-parameter pool after CUDA is up,
MoCo's key shuffle without host data, bf16 autocast through the engine, torch.compile of the train step."""
import os
import pickle

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fdsl.data import registry
from fdsl.data.device import class_params
from fdsl.engine import distributed
from fdsl.ssl import shuffle_bn

pytestmark = pytest.mark.usefixtures("one_thread")


def init_kwargs(monkeypatch, device, torch_knows_device_id=True):
    seen = {}

    def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, device_id=None):
        seen.update({k: v for k, v in locals().items() if k != "device_id" or v is not None})

    def older_init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1):
        seen.update(locals())

    fake = init_process_group if torch_knows_device_id else older_init_process_group
    monkeypatch.setattr(torch.distributed, "init_process_group", fake)
    info = distributed.DistInfo(rank=1, world_size=2, local_rank=1, launcher="torchrun", device=device)
    distributed._init_group("nccl", info, "127.0.0.1", "29500", 60.0)
    return seen


def test_nccl_group_is_bound_to_the_ranks_gpu_and_gloo_to_none(monkeypatch):
    on_gpu = init_kwargs(monkeypatch, torch.device("cuda", 1))
    assert on_gpu["backend"] == "nccl" and on_gpu["device_id"] == torch.device("cuda", 1)
    on_cpu = init_kwargs(monkeypatch, torch.device("cpu"))
    assert on_cpu["backend"] == "gloo" and "device_id" not in on_cpu
    older = init_kwargs(monkeypatch, torch.device("cuda", 1), torch_knows_device_id=False)
    assert older["backend"] == "nccl" and "device_id" not in older


def test_class_parameter_pool_spawns_once_cuda_is_initialised(monkeypatch):
    assert class_params.pool_context().get_start_method() == "fork"  # CUDA untouched: the cheap start
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert class_params.pool_context().get_start_method() == "spawn"
    # a spawned worker gets the database pickled with the pool's task
    db = registry.create("rcdb", classes=3, size=32)
    task = pickle.loads(pickle.dumps(class_params.ClassParamsOf(db)))
    assert [task(c) for c in range(3)] == [(c, db.class_params(c)) for c in range(3)]


class HostToDevice(TorchDispatchMode):
    """Records every op that reads a CPU tensor while writing a non-CPU one (a host-to-device copy)."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        reads_host = any(isinstance(a, torch.Tensor) and a.device.type == "cpu" and a.dim() > 0
                         for a in tree_leaves((args, kwargs)))
        writes_device = any(isinstance(o, torch.Tensor) and o.device.type != "cpu" for o in tree_leaves(out))
        if reads_host and writes_device:
            self.copies.append(str(func))
        return out


def test_moco_key_shuffle_copies_nothing_from_the_host():
    """On meta tensors, a stand-in for a GPU (no data, no CUDA needed; fake CUDA tensors would leave autograd
    believing in a GPU and break later fork-based tests): the shuffle's permutation is made on the device."""
    images = torch.empty(8, 3, 4, 4, device="meta")
    weight = torch.empty(5, 48, device="meta")
    with HostToDevice() as mode:
        local, everything = shuffle_bn.encode_shuffled(lambda x: x.flatten(1) @ weight.T, images, 0, 3)
    assert local.device.type == "meta" and local.shape == (8, 5) and everything.shape == (8, 5)
    assert mode.copies == []
    with HostToDevice() as mode:  # the check itself sees such a copy
        torch.arange(4).to(images.device)
    assert mode.copies == ["aten._to_copy.default"]


def test_shuffle_permutation_is_a_pure_uniform_function_of_seed_and_step():
    first = shuffle_bn.permutation(64, seed=1, step=5)
    assert sorted(first.tolist()) == list(range(64)) and torch.equal(first, shuffle_bn.permutation(64, 1, 5))
    assert not torch.equal(first, shuffle_bn.permutation(64, 1, 6))
    assert not torch.equal(first, shuffle_bn.permutation(64, 2, 5))
    where = torch.stack([shuffle_bn.permutation(8, 0, s) for s in range(2000)])
    counts = torch.stack([(where == i).sum(0) for i in range(8)]).float()  # index i at position j
    assert counts.min() > 190 and counts.max() < 310  # 250 expected each (2000 / 8)


# -- bf16 autocast through the engine, on CPU as on CUDA ------------------------------------------------------
def tiny_vit(num_classes=4, **extra):
    import timm

    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                             num_classes=num_classes, **extra)


def test_bf16_autocast_trains_through_the_engine_on_cpu_with_float32_master_weights():
    from fdsl.engine.loop import LoopContext, amp_setup, train_one_epoch
    from fdsl.engine.method import Classification
    from fdsl.engine.schedule import Schedule

    info = distributed.DistInfo()
    dtype, scaler = amp_setup(True, "bfloat16", info)
    assert (dtype, scaler) == (torch.bfloat16, None)
    model = tiny_vit()
    head_dtypes = []
    model.head.register_forward_hook(lambda mod, args, out: head_dtypes.append(out.dtype))
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(16) % 4
    images = torch.randn(16, 3, 16, 16, generator=g) * 0.3 + targets[:, None, None, None].float()  # learnable
    data = [(images[i:i + 8], targets[i:i + 8]) for i in (0, 8)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ctx = LoopContext(info=info, amp_dtype=dtype, scaler=scaler, log_interval=10**9)
    method = Classification(model, torch.nn.CrossEntropyLoss())
    losses = [train_one_epoch(method, model, data, opt, Schedule(None, True, 2), ctx, epoch=e)["loss"]
              for e in range(6)]
    assert set(head_dtypes) == {torch.bfloat16}  # autocast really ran on the CPU
    assert losses[-1] < 0.75 * losses[0] and losses == sorted(losses, reverse=True), losses
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(s.dtype == torch.float32 for state in opt.state.values() for s in state.values() if s.dim())


def test_float16_amp_is_cuda_only_and_falls_back_to_float32_on_cpu_with_a_note(capsys):
    from fdsl.engine.loop import amp_setup

    assert amp_setup(True, "float16", distributed.DistInfo()) == (None, None)
    assert "--amp with float16 needs CUDA; float32 on cpu" in capsys.readouterr().out
    assert amp_setup(False, "bfloat16", distributed.DistInfo()) == (None, None)


# -- torch.compile(fullgraph=True) of the train step ------------------------------------------------------------
def engine_step_loss(model):
    """One optimiser step of the engine (Classification through train_one_epoch) on a fixed batch of 2 at 32 px."""
    from fdsl.engine.loop import LoopContext, train_one_epoch
    from fdsl.engine.method import Classification
    from fdsl.engine.schedule import Schedule

    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(2, 3, 32, 32, generator=g), torch.tensor([0, 3]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = LoopContext(info=distributed.DistInfo(), log_interval=10**9)
    return train_one_epoch(Classification(model, torch.nn.CrossEntropyLoss()), model, [batch], opt,
                           Schedule(None, True, 1), ctx, epoch=0)["loss"]


def compiled_step_matches_eager(name: str, kwargs: dict) -> None:
    import copy

    import timm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    eager = timm.create_model(name, num_classes=4, **kwargs)
    compiled_copy = copy.deepcopy(eager)
    compiled = torch.compile(compiled_copy, fullgraph=True, backend="aot_eager")
    assert engine_step_loss(compiled) == pytest.approx(engine_step_loss(eager), rel=1e-4)
    for a, b in zip(eager.parameters(), compiled_copy.parameters()):  # the compiled backward updated the weights
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", [
    # reduced depth, the same block types (compiling all 12 ViT blocks / 16 bottlenecks takes 30-50 s here)
    ("deit_tiny_patch16_224", {"img_size": 32, "depth": 1}),
    ("resnet50", {"layers": (1, 1, 1, 1)}),
])
def test_train_step_compiles_as_one_graph(name, kwargs):
    """fullgraph=True: any graph break is an error. Backend aot_eager: the whole forward captured by dynamo and
    its backward traced by AOTAutograd, as inductor gets them, without inductor's C++ code generation (120 s
    for one ViT block on this 2-core machine; bench/gpu_check.sh compiles with inductor on the GPU). In a child
    process: a compiled backward leaves autograd threads that break later fork-based tests (tests/ssl/test_moco.py)."""
    import subprocess
    import sys

    from tests.helpers import REPO

    code = f"import tests.engine.test_gpu_ready as t; t.compiled_step_matches_eager({name!r}, {kwargs!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False, env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
