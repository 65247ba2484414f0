"""The device paths on a device that is not the CPU, without a GPU: the `meta` device.

A meta tensor has a shape, a dtype and a device but no data. Mixing it with a CPU tensor raises ("Tensor on
device cpu is not on the expected device meta"), as mixing a CUDA tensor with a CPU one does, and reading
its data (`.item()`, `.tolist()`, a data-dependent shape) raises too, as a host sync would stall a GPU. So
render -> augment -> the engine's train step, and the MoCo and BYOL steps, run here on `meta` find, on a CPU,
every constant table left on the CPU and every host read in the step that the GPU run would hit.
"""
import pytest
import timm
import torch

from fdsl.data import registry
from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.device.batches import create_batches
from fdsl.data.device.source import DeviceBatchSource
from fdsl.engine.distributed import DistInfo
from fdsl.engine.loop import LoopContext, one_update  # one_update: the loop's step between two log steps
from fdsl.engine.method import Classification
from fdsl.render.gpu import device_generator
from fdsl.ssl.backbone import create_backbone
from fdsl.ssl.byol import BYOL
from fdsl.ssl.moco import MoCo
from fdsl.ssl.optim import build_optimizer

META = torch.device("meta")
DATABASES = ["fractaldb", "ofdb2d", "onepfrac", "rcdb", "visualatom", "exfractaldb", "mvfractaldb", "ofdb3d"]
# the recipe's whole augmentation: RandAugment (colour and geometric ops), colour jitter, random erasing
SPEC = AugmentSpec(size=(16, 16), re_prob=1.0, re_mode="pixel", color_jitter=0.4, interpolation="random",
                   randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", 16))


def render_on(device, name: str, count: int = 4) -> torch.Tensor:
    small = {"iterations": 2000} if name in ("fractaldb", "ofdb2d", "onepfrac") else {}
    small.update({"points": 2000} if name in ("exfractaldb", "mvfractaldb", "ofdb3d") else {})
    db = registry.create(name, classes=2, size=16, seed=0, **small)
    batches = create_batches(db, device, progress=False)
    classes = torch.arange(count) % 2
    return batches.render(classes, classes, torch.Generator().manual_seed(0), device_generator(device, 1))


@pytest.mark.parametrize("name", DATABASES)
def test_every_device_renderer_stays_on_the_device(name):
    images = render_on(META, name)
    assert images.device == META and images.dtype == torch.uint8 and images.shape[:1] == (4,)


def test_the_augmentation_tables_follow_the_images_device():
    """A BatchAugment made without a device (bench/gpu_render.py, tests) augments batches on any device;
    the default used to be the CPU, and device batches then met CPU normalisation tables."""
    augment = BatchAugment(SPEC)
    images = render_on(META, "rcdb")
    out = augment(images, torch.Generator().manual_seed(0), device_generator(META, 1))
    assert out.device == META and out.shape == (4, 3, 16, 16) and augment.mean.device == META
    cpu = augment(torch.zeros(4, 1, 16, 16, dtype=torch.uint8), torch.Generator().manual_seed(0),
                  torch.Generator().manual_seed(1))
    assert cpu.device.type == "cpu" and torch.isfinite(cpu).all()


def test_render_augment_and_the_engine_train_step_on_a_device():
    source_db = registry.create("fractaldb", classes=2, size=16, seed=0, iterations=2000)
    batches = create_batches(source_db, META, progress=False)
    source = DeviceBatchSource(batches, 2, 4, batch_size=4, seed=0)
    source.augment = BatchAugment(SPEC)
    images, targets = next(iter(source))
    assert images.device == targets.device == META and images.shape == (4, 3, 16, 16)
    model = timm.create_model("deit_tiny_patch16_224", img_size=16, patch_size=8, depth=1, num_classes=2).to(META)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctx = LoopContext(info=DistInfo(device=META), clip_grad=1.0)  # autocast has no meta device
    one_update(Classification(model, torch.nn.CrossEntropyLoss()), model, (images, targets), optimizer, ctx)
    assert all(p.device == META for p in model.parameters())


@pytest.mark.parametrize("method_name", ["moco", "byol"])
def test_the_ssl_steps_on_a_device(method_name):
    torch.manual_seed(0)
    backbone = create_backbone("resnet18")
    if method_name == "moco":
        method = MoCo(backbone, global_batch=4, local_batch=4, queue_size=16)
        optimizer = build_optimizer("sgd", method.module.to(META), 0.03, 0.9, 1e-4)
    else:
        method = BYOL(backbone, total_updates=10, hidden=32, proj_dim=16)
        optimizer = build_optimizer("lars", method.module.to(META), 0.3, 0.9, 1e-6)
    ctx = LoopContext(info=DistInfo(device=META))
    views = [torch.zeros(4, 3, 32, 32) for _ in range(2)]  # host views: the loop moves them
    one_update(method, method.module, (views, torch.zeros(4, dtype=torch.long)), optimizer, ctx)
    assert all(t.device == META for t in method.module.state_dict().values())


def test_a_missing_wandb_is_one_warning_and_training_goes_on(monkeypatch, tmp_path, capsys):
    """The GPU machine has no wandb: --log-wandb there warns once, naming the package and the fix."""
    import sys

    from fdsl.engine.logging import TrackerSpec, start_wandb

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    spec = TrackerSpec(project_name="p", group_name="g", entity_name="YOUR_ENTITY")
    assert start_wandb(spec, str(tmp_path)) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wandb package is not installed" in err[0] and "pip install wandb" in err[0]
