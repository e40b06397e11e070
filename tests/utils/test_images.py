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


# ----------------------------------------------------------------------------- faithful pixel values
def _eight_and_sixteen(tmp_path, shape=(6, 9)):
    """An 8-bit gray array, and the path of the same image saved as a 16-bit PNG (x * 257)."""
    gray = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / "sixteen.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"
    return gray, path


@pytest.mark.parametrize("channels", [1, 3])
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, channels):
    gray, path = _eight_and_sixteen(tmp_path)
    image = read_image(path, channels)
    assert image.shape == (*gray.shape, channels) and image.dtype == np.uint8
    assert all(np.array_equal(image[..., c], gray) for c in range(channels))


def test_sixteen_bit_tiff_and_big_endian_are_scaled(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.tif")
    assert read_image(tmp_path / "a.tif", 1)[..., 0].tolist() == [[0, 1, 128, 255]]
    big_endian = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    assert images._pixels(big_endian, "L", 1, "b").tolist() == [[0, 1, 128, 255]]


def test_sixteen_bit_rgb_matches_eight_bit_within_one_level(tmp_path):
    import cv2

    rgb = np.random.default_rng(4).integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])
    image = read_image(tmp_path / "rgb16.png")
    assert np.abs(image.astype(int) - np.rint(rgb / 257)).max() <= 1


def test_thirty_two_bit_integer_images(tmp_path):
    sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))  # mode I, values of 16 bits
    assert sixteen.mode == "I" and images._pixels(sixteen, "L", 1, "x").tolist() == [[0, 255]]
    wide = Image.fromarray(np.array([[0, 2**31 - 1]], dtype=np.int32))
    assert images._pixels(wide, "L", 1, "x").tolist() == [[0, 255]]
    negative = Image.fromarray(np.array([[-1, 5]], dtype=np.int32))
    with pytest.raises(InputError, match="x has negative pixel values"):
        images._pixels(negative, "L", 1, "x")


def test_float_images_within_one_are_taken_as_they_are(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert read_image(tmp_path / "f.tif")[..., 0].tolist() == [[0, 128, 255]]


def test_float_images_past_one_are_scaled_by_their_maximum_with_a_warning(tmp_path, caplog):
    Image.fromarray(np.array([[0.0, 500.0, 1000.0]], dtype=np.float32)).save(tmp_path / "big.tif")
    with caplog.at_level("WARNING"):
        assert read_image(tmp_path / "big.tif", 1)[..., 0].tolist() == [[0, 128, 255]]
    assert "big.tif" in caplog.text and "scaled by its maximum" in caplog.text


@pytest.mark.parametrize("bad", [np.nan, np.inf, -2.0])
def test_float_images_with_non_finite_or_negative_pixels_are_errors(tmp_path, bad):
    path = tmp_path / "bad.tif"
    Image.fromarray(np.array([[0.5, bad]], dtype=np.float32)).save(path)
    with pytest.raises(InputError, match=r"image .*bad\.tif .*(non-finite|negative)"):
        read_image(path)
    assert image_problem_of(path) is not None


def image_problem_of(path):
    return images.image_problem(path)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_composited_over_black(tmp_path, mode):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., :3] = 200  # the colour transparent pixels hide
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 255, 0, 128
    image = Image.fromarray(rgba)
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":  # palette with one transparent entry: a GIF's transparency
        image = Image.fromarray(rgba[..., :3]).convert("P")
        image.info["transparency"] = int(np.asarray(image)[0, 1])  # every pixel shares that index
    path = tmp_path / f"alpha_{mode}.png"
    image.save(path, transparency=image.info.get("transparency")) if mode == "P" else image.save(path)
    out = read_image(path)
    if mode == "P":
        assert out.max() == 0  # the whole palette entry is transparent
    else:
        assert out[0, 0].tolist() == [200] * 3 and out[0, 1].tolist() == [0] * 3
        assert out[1, 0].tolist() == [100] * 3  # 200 * 128 / 255
        assert read_image(path, 1)[..., 0].tolist() == out[..., 0].tolist()


def test_sixteen_bit_mask_ids_stay_ids(tmp_path):
    ids = np.array([[0, 1, 300, 1000]], dtype=np.uint16)
    Image.fromarray(ids).save(tmp_path / "mask.png")
    assert images.read_mask(tmp_path / "mask.png").tolist() == ids.tolist()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # PIL says it too, before we refuse
def test_decompression_bombs_are_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)  # 1,200 pixels: past the limit, under twice it
    for reader in (read_image, images.read_mask):
        with pytest.raises(InputError, match=r"huge\.png is not read: 40x30 pixels .* decompression-bomb"):
            reader(path)
    assert "decompression-bomb" in images.image_problem(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # past twice the limit: PIL refuses at open
    with pytest.raises(InputError, match=r"huge\.png is not read: .*MAX_IMAGE_PIXELS"):
        read_image(path)
    with pytest.raises(InputError, match=r"huge\.png is not read"):
        images.image_size_of(path)
    assert drop_bad_images([path], "skip", "the set") == []


@pytest.mark.parametrize(
    ("size", "concern"), [((1, 1), "a side under 2"), ((300, 4), "an aspect ratio beyond 50:1")]
)
def test_tiny_and_elongated_images_are_used_with_a_warning(tmp_path, caplog, size, concern):
    Image.new("RGB", size).save(tmp_path / "odd.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "fine.png")
    with caplog.at_level("WARNING"):
        keep = drop_bad_images([tmp_path / "odd.png", tmp_path / "fine.png"], "error", "the set")
    assert keep == [0, 1]
    assert f"odd.png ({size[0]}x{size[1]} pixels, {concern}" in caplog.text and "fine.png" not in caplog.text


# ----------------------------------------------------------------------------- linked folders
def test_list_images_follows_links_once_and_survives_loops(tmp_path, caplog):
    for name in ("a/x.png", "b/y.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (2, 2)).save(tmp_path / name)
    (tmp_path / "a/up").symlink_to(tmp_path)  # a loop back to the root
    (tmp_path / "a/to_b").symlink_to(tmp_path / "b")  # b's images reached twice
    (tmp_path / "c").symlink_to(tmp_path / "a")  # a whole folder reached twice
    (tmp_path / "x_again.png").symlink_to(tmp_path / "a/x.png")
    with caplog.at_level("WARNING"):
        listed = list_images(tmp_path)
    assert listed == [tmp_path / "a/x.png", tmp_path / "b/y.png"]  # the names crossing no link
    assert "links back to" in caplog.text
    assert list_images(tmp_path / "c") == [tmp_path / "c/to_b/y.png", tmp_path / "c/x.png"]
    assert [real for _, real in images.image_files(tmp_path / "c")] == [
        str((tmp_path / "b/y.png").resolve()),
        str((tmp_path / "a/x.png").resolve()),
    ]


def test_list_images_walks_each_linked_folder_once_not_once_per_path(tmp_path):
    # 24 levels, each linking twice to the next: 2**24 paths to the one image, walked in 25 folder reads.
    levels = [tmp_path / f"d{i}" for i in range(25)]
    for folder in levels:
        folder.mkdir()
    for folder, below in zip(levels, levels[1:]):
        (folder / "x").symlink_to(below)
        (folder / "y").symlink_to(below)
    Image.new("RGB", (2, 2)).save(levels[-1] / "deep.png")
    listed = list_images(levels[0])
    assert len(listed) == 1 and listed[0].name == "deep.png"
