"""Measuring the batched renderers without a GPU: aten ops issued, ops that make the host wait for the
device, and the peak bytes of live tensors (the bench and the tests use these on CPU tensors).

An aten op is roughly one kernel launch on CUDA, so the op count of a render bounds its launch cost; it
does not depend on the device, so a CPU run measures it.
"""
from __future__ import annotations

import weakref
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# ops whose output size or value the host must read from the device (a stream synchronisation on CUDA)
SYNCING = ("nonzero", "_local_scalar_dense", "masked_select", "unique", "_unique", "_unique2", "unique_dim",
           "unique_consecutive", "item", "is_nonzero", "equal", "allclose", "_assert_async")


def _name(func) -> str:
    return func.overloadpacket.__name__


class OpCounter(TorchDispatchMode):
    """Counts the aten ops run inside it (``total``, ``by_name``) and lists those that synchronise on CUDA
    (``syncing``). ``repeat_interleave`` without ``output_size`` reads its size from the device too."""

    def __init__(self):
        super().__init__()
        self.by_name: Counter = Counter()
        self.syncing: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        self.by_name[name] += 1
        if name in SYNCING or (name == "repeat_interleave" and kwargs.get("output_size") is None
                               and not isinstance(args[0], int) and len(args) < 4):
            self.syncing.append(name)
        if name == "index" and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.syncing.append("index with a boolean mask")
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.by_name.values())


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages alive at once among those created inside it (``peak``), counting a
    storage once however many views share it. Tensors made before it started are not counted."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list] = {}  # data pointer -> [bytes, tensors alive]

    def _forget(self, pointer: int) -> None:
        entry = self._storages.get(pointer)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[pointer]

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer == 0:
            return
        entry = self._storages.setdefault(pointer, [storage.nbytes(), 0])
        if entry[1] == 0:
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._forget, pointer)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                self._track(tensor)
        return out


def count_ops(render, *args, **kwargs) -> OpCounter:
    """The OpCounter of one call ``render(*args, **kwargs)``."""
    with OpCounter() as counter:
        render(*args, **kwargs)
    return counter


def peak_bytes(render, *args, **kwargs) -> int:
    """Peak live tensor bytes of one call ``render(*args, **kwargs)`` (its output included)."""
    with LiveBytes() as live:
        out = render(*args, **kwargs)
        del out
    return live.peak


def graph_breaks(render, *args, **kwargs) -> int:
    """Graph breaks torch.compile meets tracing ``render`` (torch._dynamo.explain; nothing is compiled)."""
    import torch._dynamo

    torch._dynamo.reset()
    return torch._dynamo.explain(render)(*args, **kwargs).graph_break_count
