"""The device batch source (``--synthetic DB --synthetic-device``) and its per-sample augmentation, on CPU."""
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment
from torchvision.transforms.v2 import functional as TF

from fdsl.data import registry
from fdsl.data.batch_augment import colour_ops
from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.geometry import geometric_map
from fdsl.data.batch_augment.plan import Plan, RandAugmentLayer, full_crops
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.device import memory
from fdsl.data.device.batches import create_batches
from fdsl.data.device.class_params import all_class_params
from fdsl.data.device.memory import largest_batch, memory_probe
from fdsl.data.device.source import DeviceBatchSource
from fdsl.errors import UserError
from tests.helpers.runs import TINY_VIT, read_summary

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread beats two contending ones


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make_source(rank=0, world=1, repeated_aug=False, batch=4, classes=4, instances=8):
    db = registry.create("rcdb", classes=classes, size=24)
    source = DeviceBatchSource(create_batches(db, "cpu", progress=False), classes, instances, batch, rank, world,
                               seed=5, repeated_aug=repeated_aug)
    source.augment = BatchAugment(AugmentSpec(size=(16, 16), re_prob=0.5, re_mode="pixel",
                                              randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", 16)))
    return source


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_batches_are_pure_functions_of_epoch_rank_and_step_and_resume_with_skip():
    source = make_source()
    epoch = list(source)
    assert len(epoch) == len(source) == 8  # 4 classes x 8 instances / batch 4
    images, targets = epoch[0]
    assert images.shape == (4, 3, 16, 16) and images.dtype == torch.float32 and targets.dtype == torch.long
    assert set(torch.cat([t for _, t in epoch]).tolist()) == {0, 1, 2, 3}
    fresh = make_source()  # a new process: same seed, same batches
    assert same_batches([fresh.batch(0, 3)], [epoch[3]])
    fresh.skip(5)
    assert same_batches(list(fresh), epoch[5:])
    assert same_batches(list(fresh), epoch)  # skip applies to one iteration only
    fresh.set_epoch(1)
    assert not torch.equal(next(iter(fresh))[0], epoch[0][0])


def test_ranks_draw_disjoint_indices_and_repeated_aug_deals_repeats_to_ranks():
    first, second = make_source(rank=0, world=2), make_source(rank=1, world=2)
    a, b = set(first.indices(0).tolist()), set(second.indices(0).tolist())
    assert not a & b and a | b == set(range(32)) and len(first) == len(second) == 4
    ranks = [make_source(rank=r, world=3, repeated_aug=True).indices(0) for r in range(3)]
    assert all(len(r) == 32 // 3 for r in ranks)
    assert ranks[0][0] == ranks[1][0] == ranks[2][0]  # one index, three ranks (RASampler's dealing)
    assert not torch.equal(make_source().indices(0), make_source().indices(1))


def test_class_parameters_are_the_registry_ones_also_from_forked_workers():
    db = registry.create("visualatom", classes=6, size=32)
    assert all_class_params(db, workers=2, progress=False) == [db.class_params(c) for c in range(6)]


def test_ranks_split_the_class_parameters_and_gather_them(monkeypatch):
    db = registry.create("rcdb", classes=5, size=32)
    computed = []
    monkeypatch.setattr(type(db), "class_params", lambda self, cls: computed.append(cls) or {"cls": cls})
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)

    def all_gather_object(out, mine):  # rank 0 computed the even classes
        out[:] = [{c: {"cls": c} for c in (0, 2, 4)}, mine]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    assert all_class_params(db, progress=False) == [{"cls": c} for c in range(5)]
    assert computed == [1, 3]  # this rank's share only


# -- augmentation -------------------------------------------------------------------------------------------
def smooth_rgb(size=64, seed=0):
    small = torch.rand(1, 3, 8, 8, generator=gen(seed))
    return (torch.nn.functional.interpolate(small, size=size, mode="bicubic").clamp(0, 1) * 255).round()


def test_two_images_of_a_batch_get_different_crops_and_flips_each_as_torchvision_would():
    spec = AugmentSpec(size=(32, 32), hflip=0.5, interpolation="bilinear", mean=(0, 0, 0), std=(1, 1, 1))
    augment = BatchAugment(spec)
    image = smooth_rgb()
    batch = image.expand(8, -1, -1, -1).to(torch.uint8)
    out = augment(batch, gen(3), gen(4)) * 255
    plan = augment.sample(8, 64, gen(3))
    assert len({tuple(c.tolist()) for c in plan.crop}) == 8 and 0 < int(plan.hflip.sum()) < 8
    for i, j in itertools.combinations(range(8), 2):
        assert (out[i] - out[j]).abs().mean() > 1.0  # every pair differs
    for i in range(8):
        top, left, h, w = (int(v) for v in plan.crop[i])
        expected = TF.resized_crop(image[0], top, left, h, w, [32, 32], antialias=False)
        expected = TF.horizontal_flip(expected) if plan.hflip[i] else expected
        assert (expected - out[i]).abs().mean() < 1.0  # gray levels, after rounding


def test_randaugment_ops_are_timm_ops():
    image = smooth_rgb()
    pil = Image.fromarray(image[0].permute(1, 2, 0).byte().numpy())
    colour = [("Contrast", 1.6), ("Color", 0.3), ("Brightness", 1.5), ("Sharpness", 1.8), ("Equalize", None),
              ("AutoContrast", None), ("Posterize", 2), ("Solarize", 100), ("SolarizeAdd", 60), ("Invert", None)]
    kernel = BatchAugment(AugmentSpec(), "cpu").smooth  # Sharpness's table, made by the constructor
    for name, arg in colour:
        expected = np.asarray(auto_augment.NAME_TO_OP[name](pil, *(() if arg is None else (arg,)))).astype(float)
        tables = (kernel,) if name == "Sharpness" else ()
        got = colour_ops.COLOUR_OPS[name](image.clone(), torch.tensor([float(arg or 0)]), *tables)[0].permute(1, 2, 0).numpy()
        assert np.abs(expected - got).max() <= 2, name
    augment = BatchAugment(AugmentSpec(size=(64, 64), interpolation="bilinear"), "cpu")
    for name, arg in [("Rotate", 30.0), ("ShearX", 0.3), ("ShearY", -0.2), ("TranslateXRel", 0.2)]:
        geometry = geometric_map(name, torch.tensor([arg], dtype=torch.float64), 64, 64)
        plan = Plan(crop=full_crops(1, 64), hflip=torch.tensor([False]), vflip=torch.tensor([False]),
                    interp=torch.zeros(1, dtype=torch.long), layers=[RandAugmentLayer(torch.zeros(1), geometry=geometry)])
        x, inside = augment.warp(image.clone(), augment.upload(plan, image.device))
        got = augment.to_channels(x, inside)[0].permute(1, 2, 0).numpy()
        expected = np.asarray(auto_augment.NAME_TO_OP[name](pil, arg, fillcolor=augment.spec.fill,
                                                             resample=Image.BILINEAR)).astype(float)
        assert np.abs(expected - got).mean() < 1.0, name


def test_each_sample_draws_its_own_ops_and_magnitudes():
    spec = AugmentSpec(size=(32, 32), randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", 32))
    plan = BatchAugment(spec).sample(256, 64, gen(0))
    layer = plan.layers[0]
    applied = sum(len(rows) for rows in layer.colour.values()) + int((layer.geometry != torch.eye(3)).any(
        -1).any(-1).sum())
    assert len(layer.colour) >= 9 and 90 < applied < 170  # 10 colour ops, each sample's op applied half the time
    rotate = spec.randaugment.ops.index("Rotate")
    assert rotate >= 0 and layer.arg.abs().unique().numel() > 50  # magnitudes ~ N(9, 0.5) per sample


def test_no_aug_is_resize_and_normalise_and_erasing_boxes_are_timm_sized():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    flat = torch.full((4, 1, 48, 48), 100, dtype=torch.uint8)
    out = BatchAugment(AugmentSpec(size=(24, 24), mean=mean, std=std, no_aug=True, re_prob=1.0))(
        flat, gen(0), gen(1))
    expected = (100 / 255 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(out, expected.view(1, 3, 1, 1).expand_as(out))
    erase = BatchAugment(AugmentSpec(size=(32, 32), hflip=0, re_prob=1.0, re_mode="const"))
    out = erase(torch.full((64, 1, 32, 32), 200, dtype=torch.uint8), gen(2), gen(3))
    erased = (out == 0).all(1).float().mean((1, 2))
    assert (erased > 0.015).all() and (erased < 0.34).all()


def test_device_source_options_are_checked():
    assert AugmentSpec(size=(8, 8)).fill == (124, 116, 104)
    with pytest.raises(UserError, match="RandAugment"):
        RandAugmentSpec.parse("augmix-m5-w4-d2", 32)
    with pytest.raises(UserError, match="not implemented"):
        RandAugmentSpec.parse("rand-m9-t3a", 32)


# -- memory -----------------------------------------------------------------------------------------------------
class FakeAllocator:
    """A device of ``capacity`` units: an image costs ``per_image``, a batch ``overhead`` more."""

    def __init__(self, capacity, per_image=7, overhead=30):
        self.capacity, self.per_image, self.overhead = capacity, per_image, overhead
        self.in_use, self.calls = 0, []

    def render(self, count):
        self.calls.append(count)
        need = self.overhead + self.per_image * count
        if self.in_use + need > self.capacity:
            raise torch.OutOfMemoryError(f"fake: {need} units requested")
        self.in_use += need

    def release(self):
        self.in_use = 0


def test_bisection_finds_the_largest_batch_with_a_fake_allocator():
    device = FakeAllocator(1000)
    fits = memory_probe(device.render, release=device.release)
    assert largest_batch(fits, 512) == (1000 - 30) // 7 and len(device.calls) <= 11 and device.in_use == 0
    device.calls.clear()
    assert largest_batch(fits, 100) == 100 and device.calls == [100]
    assert largest_batch(memory_probe(FakeAllocator(10).render), 64) == 0


@pytest.mark.parametrize("guess", [100_000, 200_000])
def test_a_far_too_large_batch_is_searched_from_the_memory_estimate(guess):
    """A batch of 4 million on a device that holds 142,853: never tried, nor anything above twice the estimate;
    a handful of renders near the answer, which fits and is within 1/16 of the largest."""
    device = FakeAllocator(1_000_000)
    found = largest_batch(memory_probe(device.render, release=device.release), 4_000_000, guess=guess)
    truth = (1_000_000 - 30) // 7
    assert truth * 15 / 16 <= found <= truth and len(device.calls) <= 6 and max(device.calls) <= 2 * guess
    device.calls.clear()
    assert largest_batch(memory_probe(device.render, release=device.release), 1000, guess=guess) == 1000
    assert device.calls == [1000]


def test_a_batch_too_big_for_the_gpu_names_the_largest_that_fits(monkeypatch):
    source = make_source(batch=64, classes=8)
    device = FakeAllocator(200, per_image=8, overhead=40)
    source.device = torch.device("cuda")  # the probe runs on CUDA only; its allocator is faked here
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(memory, "release_cuda_memory", device.release)
    monkeypatch.setattr(source, "render", lambda classes, instances, key: device.render(len(classes)))
    monkeypatch.setattr(memory, "images_that_fit", lambda render, on: None)
    with pytest.raises(UserError, match="the largest that fits is 20 "):
        source.check_memory()

    def out_of_memory(epoch, step):
        raise torch.OutOfMemoryError("fake")

    monkeypatch.setattr(source, "batch", out_of_memory)
    with pytest.raises(UserError, match="lower --batch-size"):
        next(iter(source))


# -- through the command line -------------------------------------------------------------------------------------
COMMON = ["pretrain", *TINY_VIT, "-b", "8", "--num-classes", "3", "--synthetic-instances", "8", "--epochs", "2",
          "-j", "1", "--log-interval", "100", "--opt", "adamw", "--lr", "1e-3", "--synthetic-size", "24"]


@pytest.mark.parametrize("extra,message", [
    (["--synthetic", "nosuch", "--synthetic-device", "cpu"], "unknown database 'nosuch'"),
    (["--synthetic-device", "cpu", "--train-dir", "x"], "--synthetic-device needs --synthetic DB"),
    (["--synthetic", "rcdb", "--synthetic-opt", "iterations"], "--synthetic-opt needs --synthetic-device"),
    (["--synthetic", "rcdb", "--synthetic-device", "cpu", "--synthetic-opt", "iterations"], "expected KEY=VALUE"),
    (["--synthetic", "rcdb", "--synthetic-device", "cpu", "--synthetic-opt", "size=64"], "set it with --synthetic-size"),
    (["--synthetic", "rcdb", "--synthetic-device", "cpu", "--synthetic-opt", "nosuch=1"], "unknown option(s) ['nosuch']"),
    (["--synthetic", "rcdb", "--synthetic-device", "cpu", "--aa", "augmix-m5-w4-d2"], "RandAugment ('rand-...') only"),
    (["--synthetic", "rcdb", "--synthetic-device", "cpu", "--aug-splits", "3"], "not --synthetic-device"),
])
def test_bad_input_is_one_line(fdsl_cli, tmp_path, extra, message):
    code, _, err = fdsl_cli(*COMMON, *extra, "--output", tmp_path)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(fdsl_cli, tmp_path):
    code, _, err = fdsl_cli(*COMMON, "--synthetic", "rcdb", "--synthetic-device", "cuda", "--output", tmp_path)
    assert code == 2 and "no CUDA GPU is visible" in err and len(err.strip().splitlines()) == 1


def test_a_tiny_training_run_on_device_batches_resumes_mid_epoch_to_the_same_weights(fdsl_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    common = [*COMMON, "--synthetic", "rcdb", "--synthetic-device", "cpu", "--aa", "rand-m9-mstd0.5-inc1",
              "--reprob", "0.25", "--remode", "pixel", "--mixup", "0.8", "--cutmix", "1.0", "--repeated-aug",
              "--output", tmp_path]
    assert fdsl_cli(*common, "--experiment", "straight")[0] == 0
    # 3 classes x 8 instances / batch 8 = 3 steps per epoch: stops in the middle of epoch 1, resumes via skip()
    assert fdsl_cli(*common, "--experiment", "broken", "--pause-updates", "4")[0] == 0
    assert fdsl_cli(*common, "--experiment", "broken", "--resume", "auto")[0] == 0
    rows = read_summary(tmp_path / "straight")
    assert len(rows) == 2 and all(np.isfinite(float(r["train_loss"])) for r in rows)
    a = torch.load(tmp_path / "straight" / "last.pth.tar", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "broken" / "last.pth.tar", weights_only=True)["state_dict"]
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_run_and_memory_probe(fdsl_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    code, _, err = fdsl_cli(*COMMON, "--synthetic", "rcdb", "--synthetic-device", "cuda", "--output", tmp_path,
                              "--experiment", "gpu")
    assert code == 0, err
    code, _, err = fdsl_cli(*COMMON[:3], "--num-classes", "3", "--synthetic-instances", "10000000", "-b", "4000000",
                            "--synthetic", "visualatom", "--synthetic-device", "cuda", "--synthetic-size", "512",
                            "--output", tmp_path, "--experiment", "oom")
    assert code == 2 and "the largest that fits is" in err
