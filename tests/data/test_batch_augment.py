"""--gpu-augment: whole images with timm's crop boxes from the folder workers, the per-sample augmentation
on the device (timm DeiT's distribution), and training runs with it and --cache-images."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from timm.data import create_transform

from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.folder import DeviceAugment, FolderInput, collate_folder_input
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.images import crop_params
from tests.helpers.rendered_images import DEIT, cached_folder, rendered, seed_all
from tests.helpers.runs import TINY_VIT

pytestmark = pytest.mark.usefixtures("one_thread")


# -- --gpu-augment -------------------------------------------------------------------------------------------
def deit_spec(size: int) -> AugmentSpec:
    return AugmentSpec(size=(size, size), interpolation="bicubic", re_prob=0.25,
                       randaugment=RandAugmentSpec.parse("rand-m9-mstd0.5-inc1", size))


def test_folder_input_sends_whole_images_with_timms_crop_boxes_and_resizes_odd_sizes():
    spec = deit_spec(16)
    source = rendered("rcdb", 32)
    worker = FolderInput(32, spec)
    random.seed(3)
    image, box = worker(source)
    random.seed(3)
    assert image.shape == (1, 32, 32) and torch.equal(image[0], torch.from_numpy(source))
    assert tuple(box) == crop_params(32, 32, spec.scale, spec.ratio)
    image, box = worker(rendered("rcdb", 20))
    assert image.shape == (1, 32, 32) and tuple(box) == (0, 0, 32, 32)
    rgb = worker(np.zeros((32, 32, 3), np.uint8))
    (batch, boxes), targets = collate_folder_input([((image, box), 0), (rgb, 1)])
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.uint8 and isinstance(boxes, np.ndarray)
    assert targets.tolist() == [0, 1] and torch.equal(batch[0, 2], image[0])  # gray repeated beside RGB


def per_image_statistics(batch: torch.Tensor) -> np.ndarray:
    """(mean, std, share of exactly-zero pixels) per image of a normalised batch."""
    x = batch.double()
    return np.stack([x.mean((1, 2, 3)).numpy(), x.std((1, 2, 3)).numpy(), (x == 0).double().mean((1, 2, 3)).numpy()], 1)


def test_gpu_augment_draws_timms_deit_distribution():
    """The folder path (worker boxes + device augmentation) against timm's CPU pipeline on the same image: per
    image mean, spread and erased share follow the same distributions (two-sample KS, n = 300 each)."""
    n, size, source = 300, 24, rendered("visualatom", 48)
    timm_transform = create_transform(size, **DEIT)
    rgb = Image.fromarray(source).convert("RGB")
    seed_all(0)
    cpu = torch.stack([timm_transform(rgb) for _ in range(n)])
    worker = FolderInput(48, deit_spec(size))
    samples = [((worker(source)), 0) for _ in range(n)]
    (images, boxes), _ = collate_folder_input(samples)
    device = DeviceAugment(deit_spec(size), "cpu", seed=1)(( images, boxes))
    assert device.shape == cpu.shape
    a, b = per_image_statistics(cpu), per_image_statistics(device)
    for column, name in enumerate(("mean", "std")):
        assert stats.ks_2samp(a[:, column], b[:, column]).pvalue > 0.01, name
    erased_cpu, erased_device = (a[:, 2] > 0.01).mean(), (b[:, 2] > 0.01).mean()
    assert abs(erased_cpu - erased_device) < 0.08 and 0.15 < erased_device < 0.35


def test_device_augment_replays_a_step_after_skip():
    spec = deit_spec(16)
    images = torch.from_numpy(rendered("rcdb", 32)).expand(4, 1, 32, 32).contiguous()
    boxes = np.tile(np.float32([0, 0, 32, 32]), (4, 1))
    first = DeviceAugment(spec, "cpu", seed=2)
    first.set_epoch(1)
    outs = [first((images, boxes)) for _ in range(3)]
    resumed = DeviceAugment(spec, "cpu", seed=2)
    resumed.set_epoch(1)
    resumed.skip(2)
    assert torch.equal(resumed((images, boxes)), outs[2]) and not torch.equal(outs[0], outs[1])


def test_batch_augment_makes_no_blocking_copy_after_construction(monkeypatch):
    """No table is copied with a blocking ``.to(device)``, also when the tables are made for the first batch's
    device: it would wait for the GPU (and fail under torch.cuda.set_sync_debug_mode("error"))."""
    spec = AugmentSpec(size=(16, 16), mean=(0.3, 0.4, 0.5), re_prob=1.0, color_jitter=0.4,
                       randaugment=RandAugmentSpec.parse("rand-n4-m9-mstd0.5-inc1", 16))
    augment = BatchAugment(spec)
    blocking = []
    real_to = torch.Tensor.to

    def watched_to(self, *args, **kwargs):
        if not kwargs.get("non_blocking", False) and any(isinstance(a, (str, torch.device)) for a in args):
            blocking.append(args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", watched_to)
    images = torch.from_numpy(rendered("rcdb", 16)).expand(32, 1, 16, 16).contiguous()
    augment(images, torch.Generator().manual_seed(0), torch.Generator().manual_seed(1))
    assert blocking == []


# -- the training run ----------------------------------------------------------------------------------------
def test_pretrain_with_gpu_augment_and_cache_images_resumes_mid_epoch_to_the_same_weights(fdsl_cli, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cached_folder(tmp_path / "db", count=8, size=32)
    common = ["pretrain", tmp_path / "db", *TINY_VIT, "-b", "4", "--epochs", "2", "-j", "1", "--gpu-augment",
              "--cache-images", "--aa", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--mixup", "0.8", "--cutmix",
              "1.0", "--output", tmp_path / "out", "--log-interval", "1"]
    code, out, err = fdsl_cli(*common, "--experiment", "straight")
    assert code == 0, err
    assert "cache: 8 images decoded into 8.0 KB of shared memory" in out
    losses = [float(line.split("loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("train: epoch")]
    assert len(losses) == 4 and all(0 < loss < 5 for loss in losses)
    # 8 images / batch 4 = 2 steps per epoch: stops after the first step of epoch 1, resumes via skip()
    assert fdsl_cli(*common, "--experiment", "broken", "--pause-updates", "3")[0] == 0
    assert fdsl_cli(*common, "--experiment", "broken", "--resume", "auto")[0] == 0
    a = torch.load(tmp_path / "out" / "straight" / "last.pth.tar", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "out" / "broken" / "last.pth.tar", weights_only=True)["state_dict"]
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=0, msg=key)


def test_device_half_compiles_as_one_graph_equal_to_eager():
    """BatchAugment.apply traces without a graph break (fullgraph=True fails on any) and gives eager's output.
    The 'eager' backend checks the tracing only, which keeps this test to seconds."""
    spec = AugmentSpec(size=(16, 16), re_prob=1.0, re_mode="pixel", color_jitter=0.4, interpolation="random",
                       randaugment=RandAugmentSpec.parse("rand-n1-m9-mstd0.5-inc1", 16))
    augment = BatchAugment(spec, "cpu")
    images = (torch.arange(4 * 24 * 24) % 251).to(torch.uint8).view(4, 1, 24, 24)
    params = augment.upload(augment.sample(4, 24, torch.Generator().manual_seed(0)), images.device)
    noise = augment.erase_noise(images, torch.Generator().manual_seed(1))
    assert len(params.colour) == 1 and len(noise) == 1 and len(augment.colour_names) == 10
    compiled = torch.compile(augment.apply, fullgraph=True, backend="eager")
    assert torch.equal(compiled(images, params, noise), augment.apply(images, params, noise))


@pytest.mark.parametrize("extra,message", [
    (["--aug-splits", "2"], "--gpu-augment does not do AugMix"),
    (["--aa", "augmix-m5-w4-d2"], "supports RandAugment ('rand-...') only"),
])
def test_gpu_augment_bad_combinations_are_one_line(fdsl_cli, tmp_path, extra, message):
    cached_folder(tmp_path / "db", count=4, size=16)
    code, _, err = fdsl_cli("pretrain", tmp_path / "db", *TINY_VIT, "-b", "2", "--epochs", "1", "-j", "0",
                            "--gpu-augment", *extra, "--output", tmp_path / "out")
    assert code == 2 and message in err and "Traceback" not in err
