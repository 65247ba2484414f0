"""Training input: fdsl's fast PNG reader, the crop before the conversion, --gpu-augment, --cache-images."""
import io
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from timm.data import create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation
from torch.utils.data import DataLoader

from fdsl.data import cache, folder, png, registry, transforms
from fdsl.data.batch_augment.batch import BatchAugment
from fdsl.data.batch_augment.folder import DeviceAugment, FolderInput, collate_folder_input
from fdsl.data.batch_augment.spec import AugmentSpec, RandAugmentSpec
from fdsl.data.images import ResizedCrop, crop_params, read_image
from fdsl.errors import UserError
from tests.helpers.runs import TINY_VIT

pytestmark = pytest.mark.usefixtures("one_thread")
DEIT = {"is_training": True, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "color_jitter": 0.4,
        "interpolation": "bicubic"}
# every database but ExFractalDB, whose class search alone takes ~9 s; it renders with the same ifs3d code
# and is written by the same writer as MV-FractalDB and 3D-OFDB
DATABASES = [name for name in registry.names() if name != "exfractaldb"]


def rendered(name: str, size: int = 32) -> np.ndarray:
    db = registry.create(name, classes=1, size=size, seed=0)
    return next(iter(db.render(0, db.class_params(0), [0])))


def pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img if img.mode == "L" else img.convert("RGB"))


def seed_all(seed: int) -> None:
    """timm's transforms draw from python's random, numpy's global generator (RandAugment's ops) and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write(path, image: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png.encode(image))
    return path


# -- the fast reader -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATABASES)
def test_fast_reader_gives_pils_pixels_for_every_database(name):
    data = png.encode(rendered(name))
    fast = png.decode(data)
    assert fast is not None and fast.dtype == np.uint8
    np.testing.assert_array_equal(fast, pil_pixels(data))


def test_fast_reader_reads_rgb_and_both_deflate_backends():
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    for backend in ("isal", "zlib"):
        data = png.encode(image, backend=backend)
        np.testing.assert_array_equal(png.decode(data), image)
        np.testing.assert_array_equal(png.decode(data), pil_pixels(data))


def other_encoders(image: np.ndarray):
    import cv2

    rgb = np.stack([image, image[::-1], image.T], -1)
    out = {"pil-gray": image, "pil-rgb": rgb}
    files = {}
    for key, array in out.items():
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, "PNG")
        files[key] = buf.getvalue()
    files["cv2-gray"] = cv2.imencode(".png", image)[1].tobytes()
    files["cv2-rgb"] = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    for key, mode in (("palette", "P"), ("rgba", "RGBA"), ("gray16", "I;16"), ("gray-alpha", "LA")):
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, "PNG")
        files[key] = buf.getvalue()
    for key, filter_name in (("sub", "sub"), ("up", "up")):
        files[key] = png.encode(image, filter_name)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    files["jpeg"] = buf.getvalue()
    return files


def test_other_files_fall_back_to_pil_with_the_same_pixels(tmp_path):
    files = other_encoders(rendered("rcdb"))
    for key, data in files.items():
        fast = png.decode(data)
        assert fast is None or np.array_equal(fast, pil_pixels(data)), key
        path = tmp_path / f"{key}.img"
        path.write_bytes(data)
        np.testing.assert_array_equal(read_image(str(path)), pil_pixels(data), err_msg=key)
    assert png.decode(files["sub"]) is None and png.decode(files["palette"]) is None  # filters, palette: PIL


def test_cut_or_corrupt_fdsl_pngs_raise_value_error():
    data = png.encode(rendered("visualatom"))
    for broken in (data[:len(data) // 2], data[:-12], data[:40] + bytes(len(data) - 40)):
        with pytest.raises(ValueError):
            png.decode(broken)


def test_a_bad_file_is_one_warning_naming_it_and_skipped_or_one_error_when_strict(tmp_path):
    image = rendered("rcdb")
    for i in range(3):
        write(tmp_path / "a" / f"{i}.png", image)
    bad = tmp_path / "a" / "1.png"
    bad.write_bytes(png.encode(image)[:60])
    ds = folder.ImageFolder(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img, _ = ds[1]
    assert [str(w.message).split(":")[0] for w in caught] == [f"skipping unreadable image {bad}"]
    assert np.array_equal(np.asarray(img)[..., 0], image) and ds.bad_files.take() == (1, str(bad))
    with pytest.raises(UserError, match=f"unreadable image {bad}.*--strict-data"):
        folder.ImageFolder(str(tmp_path), strict=True)[1]


# -- crop before convert -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,scale,ratio", [((40, 40), (0.08, 1.0), (3 / 4, 4 / 3)),
                                               ((30, 50), (0.5, 1.0), (0.9, 1.1)),
                                               ((10, 100), (0.9, 1.0), (1.0, 1.0)),  # never fits: fallback
                                               ((100, 10), (0.9, 1.0), (1.0, 1.0))])
def test_crop_boxes_are_timms_draws(shape, scale, ratio):
    img = Image.new("L", shape[::-1])
    for seed in range(50):
        random.seed(seed)
        expected = RandomResizedCropAndInterpolation.get_params(img, scale, ratio)
        random.seed(seed)
        assert crop_params(*shape, scale, ratio) == expected


def test_crop_first_gives_timms_deit_output_from_the_gray_array():
    gray = rendered("visualatom", 48)
    timm_transform = create_transform(24, **DEIT)
    ours = transforms.crop_first(timm_transform)
    rgb = Image.fromarray(gray).convert("RGB")
    for seed in range(12):
        seed_all(seed)
        expected = timm_transform(rgb)
        seed_all(seed)
        assert torch.equal(ours(gray), expected), seed


def test_resized_crop_keeps_gray_one_channel():
    out = ResizedCrop(16, interpolation="bicubic")(rendered("rcdb"))
    assert out.mode == "L" and out.size == (16, 16)


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


# -- --cache-images ------------------------------------------------------------------------------------------
def cached_folder(tmp_path, count=8, size=32):
    paths = []
    for i in range(count):
        paths.append(str(write(tmp_path / f"c{i % 2}" / f"{i}.png", rendered("rcdb", size) // (i + 1))))
    return paths


def test_cache_holds_the_files_pixels_and_remembers_unreadable_ones(tmp_path):
    paths = cached_folder(tmp_path)
    with open(paths[3], "r+b") as f:
        f.truncate(50)
    built = cache.for_folder(paths, "on", workers=2, log=lambda _: None)
    for i, path in enumerate(paths):
        if i == 3:
            with pytest.raises(ValueError, match="unreadable when cached"):
                built.get(i)
        else:
            np.testing.assert_array_equal(built.get(i), read_image(path))
    assert built.nbytes == 8 * 32 * 32 and list(built.errors) == [3]  # its header was whole


def test_a_cache_that_does_not_fit_is_refused_with_the_figure(tmp_path, monkeypatch):
    paths = cached_folder(tmp_path, count=4)
    monkeypatch.setattr(cache, "available_bytes", lambda: 4000)
    assert cache.for_folder(paths, "auto") is None
    with pytest.raises(UserError, match=r"4 decoded images need 4\.0 KB, more than 80% of the 3\.9 KB"):
        cache.for_folder(paths, "on")


def _worker_memory(_):
    """(RssAnon kB, whether the cache's pages are a shared mapping) in the reading worker."""
    info = torch.utils.data.get_worker_info()
    ds = info.dataset
    start = ds.cache.pixels.ctypes.data
    with open("/proc/self/maps") as f:
        shared = any(int(line.split("-")[0], 16) <= start < int(line.split()[0].split("-")[1], 16)
                     and line.split()[1].endswith("s") for line in f)
    with open("/proc/self/status") as f:
        anon = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    return anon, shared


class _ReadAll(torch.utils.data.Dataset):
    """Each item: read every cached image (touch every page), then report the worker's memory."""

    def __init__(self, cached):
        self.cache = cached

    def __len__(self):
        return 4

    def __getitem__(self, i):
        before = _worker_memory(None)[0]
        total = sum(int(self.cache.get(k).sum()) for k in range(len(self.cache)))
        after, shared = _worker_memory(None)
        return torch.tensor([after - before, shared, total])


def test_workers_share_one_cache(tmp_path):
    paths = cached_folder(tmp_path, count=32, size=256)  # 2 MB of pixels
    built = cache.for_folder(paths, "on", log=lambda _: None)
    loader = DataLoader(_ReadAll(built), batch_size=1, num_workers=2)
    rows = torch.cat(list(loader))
    grown_kb, shared, total = rows[:, 0], rows[:, 1], rows[:, 2]
    assert shared.all() and (total == total[0]).all()
    assert grown_kb.max() < built.nbytes / 1024 / 4  # reading 2 MB of cache added no private copy


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
