"""The image reader, image listing and the bad-image check of `vision_lightning.utils.images`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vision_lightning.utils import images
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import drop_bad_images, find_bad_images, list_images, read_image


@pytest.fixture
def rgb_file(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(array).save(path)
    return path, array


@pytest.fixture
def gray_file(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (10, 14), dtype=np.uint8)
    path = tmp_path / "gray.png"
    Image.fromarray(array).save(path)
    return path, array


def test_read_rgb(rgb_file):
    path, array = rgb_file
    image = read_image(path)
    assert image.shape == (12, 20, 3) and image.dtype == np.uint8
    assert np.array_equal(image, array)


def test_read_rgb_as_one_channel(rgb_file):
    path, array = rgb_file
    image = read_image(str(path), channels=1)
    assert image.shape == (12, 20, 1) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], np.asarray(Image.fromarray(array).convert("L")))


def test_read_gray_as_three_channels(gray_file):
    path, array = gray_file
    image = read_image(path, channels=3)
    assert image.shape == (10, 14, 3) and image.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(image[..., channel], array)
    assert np.array_equal(read_image(path, channels=1)[..., 0], array)


def test_read_missing_file(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(MissingInputError) as error:
        read_image(missing)
    assert isinstance(error.value, FileNotFoundError)
    assert str(missing) in str(error.value)


def test_read_garbage_file(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00\x01 definitely not a JPEG" * 8)
    with pytest.raises(InputError) as error:
        read_image(garbage)
    assert not isinstance(error.value, MissingInputError)
    assert str(garbage) in str(error.value)


def test_read_bad_channels(rgb_file):
    with pytest.raises(InputError, match="channels"):
        read_image(rgb_file[0], channels=2)


def test_list_images_sorted_and_recursive(tmp_path):
    pixel = Image.new("RGB", (2, 2))
    names = ["b.png", "a.JPG", "sub/deeper/c.jpeg", "sub/a.bmp", "z.webp"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        pixel.save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub" / "labels.csv").write_text("a,b\n")
    (tmp_path / "folder.png").mkdir()  # a directory with an image suffix is not an image
    found = list_images(tmp_path)
    assert found == sorted(tmp_path / name for name in names)
    assert list_images(str(tmp_path), recursive=False) == sorted(tmp_path / n for n in names if "/" not in n)


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(MissingInputError) as error:
        list_images(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value)


def test_drop_bad_images(tmp_path, rgb_file, gray_file):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"junk")
    missing = tmp_path / "missing.png"
    paths = [rgb_file[0], garbage, gray_file[0], missing]
    assert drop_bad_images(paths, "skip", "the test set") == [0, 2]
    assert [path for path, _ in find_bad_images(paths)] == [str(garbage), str(missing)]
    with pytest.raises(InputError) as error:
        drop_bad_images(paths, "error", "the test set")
    assert str(garbage) in str(error.value) and str(missing) in str(error.value)
    assert "the test set" in str(error.value)
    with pytest.raises(InputError, match="bad_images"):
        drop_bad_images(paths, "ignore", "the test set")


def test_drop_bad_images_off_checks_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("bad_images off must not open any file")

    monkeypatch.setattr(images, "find_bad_images", fail)
    monkeypatch.setattr(images, "image_problem", fail)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"junk")
    paths = [garbage, tmp_path / "missing.png", str(tmp_path / "also-missing.jpg")]
    assert drop_bad_images(paths, "off", "the training set") == [0, 1, 2]
