"""Training input: fdsl's fast PNG reader and the crop before the conversion."""
import io
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform
from timm.data.transforms import RandomResizedCropAndInterpolation

from fdsl.data import folder, png, registry, transforms
from fdsl.data.images import ResizedCrop, crop_params, read_image
from fdsl.errors import UserError
from tests.helpers.rendered_images import DEIT, rendered, seed_all, write

pytestmark = pytest.mark.usefixtures("one_thread")
# every database but ExFractalDB, whose class search alone takes ~9 s; it renders with the same ifs3d code
# and is written by the same writer as MV-FractalDB and 3D-OFDB
DATABASES = [name for name in registry.names() if name != "exfractaldb"]


def pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img if img.mode == "L" else img.convert("RGB"))


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
