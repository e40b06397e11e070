"""Images and masks are read as people see them: the EXIF orientation of `vision_lightning.utils.images`.

A phone saves a portrait photo as landscape pixels plus "Orientation: 6" (turn 90 degrees clockwise to
show). Every reader applies it, and `image_size_of` reports the shown size from the header alone.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from vision_lightning.utils.images import (
    ORIENTATION_TAG,
    image_problem,
    image_size_of,
    read_image,
    read_mask,
)

HEIGHT, WIDTH = 32, 48  # as shown; multiples of 16 so JPEG blocks stay flat


def upright_image() -> np.ndarray:
    """An RGB picture whose every turn and flip looks different: flat 16x16 blocks of distinct colours."""
    blocks = np.arange(HEIGHT // 16 * (WIDTH // 16)).reshape(HEIGHT // 16, WIDTH // 16)
    colours = np.stack([blocks * 40 + 20, 230 - blocks * 35, (blocks % 2) * 200 + 25], axis=-1)
    return np.kron(colours, np.ones((16, 16, 1))).astype(np.uint8)


def upright_mask() -> np.ndarray:
    """Class ids 0-5, one per 16x16 block, so a wrong turn changes them."""
    blocks = np.arange(HEIGHT // 16 * (WIDTH // 16)).reshape(HEIGHT // 16, WIDTH // 16)
    return np.kron(blocks, np.ones((16, 16))).astype(np.uint8)


def stored_as(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that `orientation` shows `upright` (the EXIF table, in numpy)."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: np.rot90(a, 2),
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, 1),  # shown = stored turned 90 degrees clockwise
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, -1),
    }[orientation](upright).copy()


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return exif


def save(array: np.ndarray, path, orientation: int | None, **options) -> None:
    extra = {} if orientation is None else {"exif": exif_with(orientation)}
    Image.fromarray(array).save(path, **extra, **options)


def png_chunks(data: bytes) -> list[bytes]:
    """A PNG's chunks, each as its raw bytes (length, type, data, CRC)."""
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append(data[offset : offset + 12 + length])
        offset += 12 + length
    return chunks


def move_exif_after_pixels(data: bytes) -> bytes:
    """The same PNG with its eXIf chunk after the pixel data, where PNG allows it too."""
    chunks = png_chunks(data)
    exif = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    assert len(exif) == 1 and rest[-1][4:8] == b"IEND"
    return data[:8] + b"".join(rest[:-1] + exif + rest[-1:])


def text_chunk(key: str, value: str) -> bytes:
    body = key.encode("latin-1") + b"\0" + value.encode("latin-1")
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_png_pixels_come_out_upright(tmp_path, orientation):
    path = tmp_path / f"photo{orientation}.png"
    save(stored_as(upright_image(), orientation), path, orientation)
    assert Image.open(path).getexif()[ORIENTATION_TAG] == orientation  # the tag is really there
    image = read_image(path)
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert np.array_equal(image, upright_image())
    assert image_size_of(path) == (HEIGHT, WIDTH)
    # the same result as PIL's own rule
    assert np.array_equal(image, np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")))


@pytest.mark.parametrize("orientation", [2, 4, 5, 7])
def test_flipped_orientations_too(tmp_path, orientation):
    path = tmp_path / "photo.png"
    save(stored_as(upright_image(), orientation), path, orientation)
    assert np.array_equal(read_image(path), upright_image())
    assert image_size_of(path) == (HEIGHT, WIDTH)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_pixels_come_out_upright(tmp_path, orientation):
    path = tmp_path / f"photo{orientation}.jpg"
    save(stored_as(upright_image(), orientation), path, orientation, quality=95, subsampling=0)
    image = read_image(path)
    assert image.shape == (HEIGHT, WIDTH, 3)
    error = np.abs(image.astype(int) - upright_image().astype(int)).mean()
    assert error < 2, f"mean error {error:.1f} is more than JPEG loses"
    if orientation == 3:  # same shape either way: the stored orientation must be far off
        assert np.abs(image.astype(int) - stored_as(upright_image(), 3).astype(int)).mean() > 30
    assert image_size_of(path) == (HEIGHT, WIDTH)
    gray = read_image(path, channels=1)
    assert gray.shape == (HEIGHT, WIDTH, 1)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_size_swaps_sides_only_for_quarter_turns(tmp_path, suffix):
    stored = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)  # stored landscape
    for orientation in range(1, 9):
        path = tmp_path / f"{orientation}{suffix}"
        save(stored, path, orientation)
        expected = (WIDTH, HEIGHT) if orientation >= 5 else (HEIGHT, WIDTH)
        assert image_size_of(path) == expected == read_image(path).shape[:2], orientation


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_tiff_is_turned_once(tmp_path, orientation, compression):
    """Newer Pillow turns TIFFs itself, older does not: either way they come out upright, once."""
    path = tmp_path / "scan.tif"
    Image.fromarray(stored_as(upright_image(), orientation)).save(
        path, tiffinfo={ORIENTATION_TAG: orientation}, compression=compression
    )
    assert np.array_equal(read_image(path), upright_image())
    assert image_size_of(path) == (HEIGHT, WIDTH)
    gray = tmp_path / "gray.tif"  # Pillow 13 garbled these when it memory-mapped them
    Image.fromarray(stored_as(upright_mask() * 40, orientation)).save(
        gray, tiffinfo={ORIENTATION_TAG: orientation}, compression=compression
    )
    assert np.array_equal(read_image(gray, channels=1)[..., 0], upright_mask() * 40)
    assert np.array_equal(read_mask(gray, "nonzero"), (upright_mask() > 0).astype(np.uint8))
    deep = tmp_path / "mask16.tif"
    Image.fromarray(stored_as(upright_mask().astype(np.uint16) * 300, orientation)).save(
        deep, tiffinfo={ORIENTATION_TAG: orientation}, compression=compression
    )
    assert np.array_equal(read_mask(deep), upright_mask().astype(np.int32) * 300)
    assert image_size_of(gray) == image_size_of(deep) == (HEIGHT, WIDTH)


def test_image_size_of_does_not_decode_pixels(tmp_path, monkeypatch):
    jpeg, png, plain = tmp_path / "a.jpg", tmp_path / "b.png", tmp_path / "c.png"
    save(stored_as(upright_image(), 6), jpeg, 6)
    save(stored_as(upright_image(), 6), png, 6)
    save(upright_image(), plain, None)

    def no_decoding(self):
        raise AssertionError("image_size_of decoded the pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert image_size_of(jpeg) == image_size_of(png) == image_size_of(plain) == (HEIGHT, WIDTH)


def test_png_exif_after_the_pixels(tmp_path):
    """PNG allows eXIf after IDAT; PIL only sees it after decoding, and the size must agree."""
    buffer = io.BytesIO()
    Image.fromarray(stored_as(upright_image(), 6)).save(buffer, format="PNG", exif=exif_with(6))
    path = tmp_path / "late.png"
    path.write_bytes(move_exif_after_pixels(buffer.getvalue()))
    with Image.open(path) as image:
        assert "exif" not in image.info  # not seen before decoding
    assert image_size_of(path) == (HEIGHT, WIDTH)
    assert np.array_equal(read_image(path), upright_image())


def test_xmp_orientation_counts_like_exif(tmp_path):
    """Some editors write the orientation only as XMP (`tiff:Orientation`); PIL reads both."""
    buffer = io.BytesIO()
    Image.fromarray(stored_as(upright_image(), 8)).save(buffer, format="PNG")
    xmp = '<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    chunks = png_chunks(buffer.getvalue())
    path = tmp_path / "xmp.png"
    path.write_bytes(
        buffer.getvalue()[:8] + chunks[0] + text_chunk("XML:com.adobe.xmp", xmp) + b"".join(chunks[1:])
    )
    assert image_size_of(path) == (HEIGHT, WIDTH)
    assert np.array_equal(read_image(path), upright_image())


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_unknown_or_broken_orientation_is_ignored(tmp_path):
    stored = upright_image()
    unknown = tmp_path / "unknown.png"
    save(stored, unknown, 9)
    assert np.array_equal(read_image(unknown), stored)
    assert image_size_of(unknown) == (HEIGHT, WIDTH)
    broken = tmp_path / "broken.jpg"
    save(stored, broken, None, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")  # a cut-off IFD
    assert read_image(broken).shape == (HEIGHT, WIDTH, 3)
    assert image_size_of(broken) == (HEIGHT, WIDTH)
    assert image_problem(broken) is None


def test_mask_png_fits_its_orientation_6_jpeg(tmp_path):
    """A phone photo (stored sideways, tag 6) and a mask drawn on it as shown (plain PNG) agree."""
    photo, mask = tmp_path / "photo.jpg", tmp_path / "photo_mask.png"
    save(stored_as(upright_image(), 6), photo, 6)
    save(upright_mask(), mask, None)
    assert Image.open(photo).size != Image.open(mask).size  # stored sizes differ...
    assert image_size_of(photo) == image_size_of(mask) == (HEIGHT, WIDTH)  # ...shown sizes agree
    image, classes = read_image(photo), read_mask(mask)
    assert image.shape[:2] == classes.shape
    assert np.array_equal(classes, upright_mask())


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("mode", ["L", "P"])
def test_mask_with_its_own_orientation_is_turned(tmp_path, orientation, mode):
    path = tmp_path / "mask.png"
    stored = Image.fromarray(stored_as(upright_mask(), orientation))
    if mode == "P":
        stored = stored.convert("P")  # palette indices are the class ids
        stored.putpalette([v for k in range(256) for v in (k, 255 - k, 0)])
    stored.save(path, exif=exif_with(orientation))
    classes = read_mask(path)
    assert classes.shape == (HEIGHT, WIDTH) == image_size_of(path)
    assert np.array_equal(classes, upright_mask())


@pytest.mark.parametrize("mask_format", ["nonzero", "scale255", "colors"])
def test_every_mask_format_is_turned(tmp_path, mask_format):
    binary = (upright_mask() % 2).astype(np.uint8)
    path = tmp_path / "mask.png"
    if mask_format == "colors":
        colours = np.array([[0, 0, 0], [200, 10, 30]], dtype=np.uint8)
        save(stored_as(colours[binary], 6), path, 6)
        classes = read_mask(path, "colors", colors=colours.tolist())
    else:
        save(stored_as(binary * (255 if mask_format == "scale255" else 1), 6), path, 6)
        classes = read_mask(path, mask_format)
    assert np.array_equal(classes, binary)


def test_sixteen_bit_mask_is_turned(tmp_path):
    stored = stored_as(upright_mask().astype(np.uint16) * 300, 8)
    path = tmp_path / "mask16.png"
    Image.fromarray(stored).save(path, exif=exif_with(8))
    classes = read_mask(path)
    assert classes.dtype == np.int32
    assert np.array_equal(classes, upright_mask().astype(np.int32) * 300)
