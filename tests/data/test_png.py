"""The PNG writer (fdsl.data.png): decodes to the same pixels in PIL, OpenCV and the training loader, for gray
and RGB, with ISA-L and with the zlib fallback; the same bytes in every process."""
import hashlib
import io
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from fdsl.data import folder, png, registry, writers
from tests.helpers import REPO


def images():
    rng = np.random.default_rng(0)
    rcdb = registry.create("rcdb", classes=1, size=96)
    drawing = next(rcdb.render(0, rcdb.class_params(0), [0]))  # a real line drawing
    return {
        "gray noise": rng.integers(0, 256, (37, 53), dtype=np.uint8),
        "rgb noise": rng.integers(0, 256, (29, 41, 3), dtype=np.uint8),
        "gray drawing": drawing,
        "rgb drawing": np.ascontiguousarray(np.stack([drawing, 255 - drawing, drawing // 2], axis=2)),
    }


@pytest.mark.parametrize("backend", ["isal", "zlib"])
@pytest.mark.parametrize("filter", list(png.FILTERS))
def test_round_trip_through_pil_and_opencv(backend, filter):
    for name, image in images().items():
        data = png.encode(image, filter, backend)
        assert data[:8] == png.SIGNATURE
        with Image.open(io.BytesIO(data)) as decoded:
            assert decoded.mode == ("L" if image.ndim == 2 else "RGB"), name
            assert np.array_equal(np.asarray(decoded), image), name
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(bgr if image.ndim == 2 else bgr[:, :, ::-1], image), name


def test_the_training_loader_reads_what_the_builder_wrote(tmp_path):
    for i, (name, image) in enumerate(images().items()):
        (tmp_path / "c0").mkdir(exist_ok=True)
        writers.atomic_write(str(tmp_path / "c0" / f"{i}.png"), writers.encode_png(image))
    dataset = folder.ImageFolder(str(tmp_path))
    for (img, label), image in zip((dataset[i] for i in range(len(dataset))), images().values()):
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        assert label == 0 and np.array_equal(np.asarray(img), rgb)


def test_same_bytes_in_another_process_and_smaller_than_opencv(tmp_path):
    arrays = images()
    np.savez(tmp_path / "images.npz", *arrays.values())
    code = (f"import hashlib, numpy as np; from fdsl.data import png; z = np.load({str(tmp_path / 'images.npz')!r}); "
            "print(' '.join(hashlib.sha1(png.encode(z[k])).hexdigest() for k in sorted(z.files, key=lambda k: "
            "int(k.split('_')[1]))))")
    other = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                           text=True, check=True).stdout.split()
    assert other == [hashlib.sha1(png.encode(i)).hexdigest() for i in arrays.values()]
    drawing = arrays["gray drawing"]
    assert len(png.encode(drawing)) < len(cv2.imencode(".png", drawing)[1])


def test_zlib_fallback_when_isal_is_missing():
    code = ("import sys; sys.modules['isal'] = None; import numpy as np, cv2; from fdsl.data import png; "
            "a = np.arange(64 * 48, dtype=np.uint8).reshape(64, 48) % 7 * 30; "
            "b = cv2.imdecode(np.frombuffer(png.encode(a), np.uint8), cv2.IMREAD_UNCHANGED); "
            "print(png.BACKEND, bool((a == b).all()), png.describe())")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("zlib True fdsl-png zlib")


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        png.encode(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        png.encode(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="filter"):
        png.encode(np.zeros((4, 4), np.uint8), "paeth")
