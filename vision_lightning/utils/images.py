"""The one image reader of the project, plus the check that finds corrupt files before training.

Images are read as people see them: a file's EXIF orientation (a phone photo saved sideways with
"rotate 90 degrees when shown") is applied by `read_image`, `read_mask` and `image_size_of` alike, so
an image, its mask and the sizes checked before training always agree. Pixels are never read any
other way in the package: whatever opens an image file goes through this module.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.Image import Transpose

from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.resize import resize_shorter_side

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """All image files under `folder`, sorted, so every run sees the same order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"image folder {folder} does not exist")
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))


ORIENTATION_TAG = 0x0112  # EXIF "Orientation": how the stored pixels must be turned to be shown
# Orientation value -> the transposition that shows the stored pixels upright (the EXIF 2.3 table;
# what PIL.ImageOps.exif_transpose does). 1, absent or unknown values: shown as stored.
_UPRIGHT = {
    2: Transpose.FLIP_LEFT_RIGHT,
    3: Transpose.ROTATE_180,
    4: Transpose.FLIP_TOP_BOTTOM,
    5: Transpose.TRANSPOSE,
    6: Transpose.ROTATE_270,
    7: Transpose.TRANSVERSE,
    8: Transpose.ROTATE_90,
}
_SWAPS_SIDES = (5, 6, 7, 8)  # a quarter turn: the shown width is the stored height


def _orientation_in(exif: Callable[[], Image.Exif]) -> int:
    """The orientation in the EXIF that `exif()` reads (EXIF block, or XMP `tiff:Orientation`); 1
    when absent, out of range or unreadable: a damaged EXIF block does not make the pixels unusable."""
    try:
        value = int(exif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - any EXIF parser failure means "no usable orientation"
        return 1
    return value if value in _UPRIGHT else 1


def _png_metadata_after_pixels(path: str | Path) -> bool:
    """Whether a PNG has an eXIf or text chunk after its pixel data (IDAT), where PIL only looks
    once the pixels are decoded; walks the chunk headers, reading no pixel data."""
    with open(path, "rb") as file:
        file.seek(8)  # the PNG signature
        seen_pixels = False
        while len(header := file.read(8)) == 8:
            length, kind = struct.unpack(">I4s", header)
            if kind == b"IEND":
                return False
            if kind == b"IDAT":
                seen_pixels = True
            elif seen_pixels and kind in (b"eXIf", b"tEXt", b"zTXt", b"iTXt"):
                return True
            file.seek(length + 4, 1)  # the data and its CRC
    return False


@cache
def _pil_turns_tiffs() -> bool:
    """Whether PIL's TIFF reader applies the orientation itself (newer Pillow does, 13 for one: it
    reports the shown size and turns the pixels on load), found once on a 2x1 TIFF tagged 6.

    Pillow 13 then garbles uncompressed 8- and 16-bit gray or palette TIFFs tagged 5 to 8 that it
    memory-maps (it maps them with the turned size); it maps files opened by name only, so the readers
    open images from a file object.
    """
    buffer = io.BytesIO()
    Image.new("L", (2, 1)).save(buffer, format="TIFF", tiffinfo={ORIENTATION_TAG: 6})
    buffer.seek(0)
    with Image.open(buffer) as image:
        return image.size == (1, 2)


def orientation_to_apply(image: Image.Image, path: str | Path, decode: bool = False) -> int:
    """The EXIF orientation (1-8) still to apply to `image`, just opened from `path`, read from its
    metadata: 1 where there is none, or where PIL applies it itself (TIFF in newer Pillow).

    Call it before decoding (TIFF reads its tags from the open file). PIL's PNG reader decodes all
    pixels to look for EXIF after them; unless the caller is about to `decode` anyway, a PNG is
    decoded only when it does have metadata after its pixels, which the chunk headers tell.
    Decoding errors are raised, EXIF errors are not.
    """
    if image.format == "TIFF" and _pil_turns_tiffs():
        return 1
    if image.format == "PNG" and "exif" not in image.info:
        if not decode and not _png_metadata_after_pixels(path):
            return _orientation_in(lambda: Image.Image.getexif(image))  # what open() has read
        image.load()
    return _orientation_in(image.getexif)


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """`image` turned as EXIF `orientation` says it is shown (PIL.ImageOps.exif_transpose's table)."""
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


def _opened(path: str | Path, data: bytes | memoryview | None) -> BinaryIO:
    """The file at `path`, or `data` (its bytes, already read: a streamed sample) as a file."""
    return io.BytesIO(data) if data is not None else open(path, "rb")  # the caller closes it


def read_image(path: str | Path, channels: int = 3, data: bytes | memoryview | None = None) -> np.ndarray:
    """Read an image as uint8 HxWxC with C = `channels` (1 = grayscale, 3 = RGB), upright.

    Grayscale files become RGB when 3 channels are asked for, and RGB files become grayscale when 1
    is asked for, so a model's `in_channels` decides and the files on disk do not have to agree.
    The EXIF orientation is applied: a phone photo comes out as it is shown, not as it is stored.
    `data`: the file's bytes, already read (a streamed sample); `path` then only names it.
    """
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"channels must be 1 or 3 to read {path}, got {channels}")
    try:
        with _opened(path, data) as file, Image.open(file) as image:  # see _pil_turns_tiffs
            turn = orientation_to_apply(image, path, decode=True)
            array = np.asarray(upright(image.convert(mode), turn))
    except FileNotFoundError:
        raise MissingInputError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"image {path} cannot be read: {error}") from None
    return array[..., None] if channels == 1 else array


def image_size_of(path: str | Path) -> tuple[int, int]:
    """(height, width) as the image is shown, i.e. as `read_image` returns it, from the file's header
    and metadata without decoding the pixels: sides are swapped for EXIF orientations 5 to 8."""
    try:
        with Image.open(path) as image:
            height, width = image.height, image.width
            if orientation_to_apply(image, path) in _SWAPS_SIDES:
                return width, height
            return height, width
    except FileNotFoundError:
        raise MissingInputError(f"image {path} does not exist") from None
    except (OSError, SyntaxError, ValueError) as error:  # a PNG with late metadata is decoded
        raise InputError(f"image {path} cannot be read: {error}") from None


def to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWxC to float CxHxW in [0, 1]; copies, so read-only arrays (PIL's) are fine."""
    return torch.tensor(image).permute(2, 0, 1).contiguous().float().div_(255)


def image_problem(path: str | Path) -> str | None:
    """Why `path` is not a usable image (missing, corrupt, truncated), or None when it decodes fully.

    `Image.verify()` catches a broken header or structure; decoding all pixels (`load()`) catches
    truncated files, which verify does not (seed 001 found both kinds in the cats-vs-dogs set).
    """
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        return "file does not exist"
    except Exception as error:  # noqa: BLE001 - any decoder failure means the file is unusable
        return f"{type(error).__name__}: {error}"
    return None


def find_bad_images(paths: Iterable[str | Path], workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for every file in `paths` that does not decode; checked in parallel threads."""
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(pool.map(image_problem, paths))
    return [(path, problem) for path, problem in zip(paths, problems) if problem is not None]


def drop_bad_images(paths: Sequence[str | Path], on_bad: str, what: str) -> list[int]:
    """Indices of the usable images in `paths`; bad ones are reported by path and skipped or fatal.

    `on_bad` is "skip" (warn, naming every file, and go on without them), "error" (stop) or "off"
    (do not check). `what` names the data set in the messages.
    """
    if on_bad == "off":
        return list(range(len(paths)))
    if on_bad not in ("skip", "error"):
        raise InputError(f"bad_images must be 'skip', 'error' or 'off', got {on_bad!r}")
    bad = dict(find_bad_images(paths))
    if not bad:
        return list(range(len(paths)))
    listing = "; ".join(f"{path} ({reason})" for path, reason in bad.items())
    if on_bad == "error":
        raise InputError(f"{len(bad)} unreadable image(s) in {what}: {listing}")
    log.warning("Skipping %d unreadable image(s) in %s: %s", len(bad), what, listing)
    return [i for i, path in enumerate(paths) if str(path) not in bad]


def readable_images(folder: str | Path, on_bad: str, what: str) -> tuple[list[Path], list[int]]:
    """(every image under `folder`, the indices of the usable ones): a folder without images, or
    without any readable one, is an error naming `what` (e.g. `predict_root photos/`); unreadable
    files are handled as `drop_bad_images` says."""
    paths = list_images(folder)
    if not paths:
        raise InputError(f"{what} has no images")
    keep = drop_bad_images(paths, on_bad, what)
    if not keep:
        raise InputError(f"{what} has no readable images left after skipping unreadable ones")
    return paths, keep


MASK_FORMATS = ("index", "nonzero", "scale255", "colors")


def read_mask(
    path: str | Path,
    mask_format: str = "index",
    colors: Sequence[Sequence[int]] | None = None,
    data: bytes | memoryview | None = None,
) -> np.ndarray:
    """Read a segmentation mask as HxW class ids (uint8, or int32 past 255 classes), upright: its own
    EXIF orientation is applied, as `read_image` does to images (`data`: the file's bytes, as there).

    `mask_format` says how pixel values become classes:
    - `index`: the value is the class id (palette PNGs give their palette indices);
    - `nonzero`: any value >= 1 is class 1 (seed 000's pneumothorax masks);
    - `scale255`: 0/255 masks, values >= 128 are class 1 (seed 003's ISBI labels; JPEG-safe);
    - `colors`: RGB colours, `colors[k]` is the colour of class k (CamVid-style masks).
    """
    try:
        with _opened(path, data) as file, Image.open(file) as image:  # see _pil_turns_tiffs
            turn, mode = orientation_to_apply(image, path, decode=True), image.mode
            if mask_format != "colors" and mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                array = np.asarray(upright(image, turn))  # palette indices / gray values, not converted
            else:
                array = np.asarray(upright(image.convert("RGB"), turn))
    except FileNotFoundError:
        raise MissingInputError(f"mask {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"mask {path} cannot be read: {error}") from None
    if mask_format == "colors":
        if not colors:
            raise InputError("a PaletteMasks source needs colors: one [r, g, b] per class")
        codes = array.astype(np.int32) @ np.array([65536, 256, 1], dtype=np.int32)
        lookup = {r * 65536 + g * 256 + b: k for k, (r, g, b) in enumerate(colors)}
        found = np.unique(codes)
        unknown = [c for c in found.tolist() if c not in lookup]
        if unknown:
            shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:4])
            raise InputError(f"mask {path} has colour(s) {shown} that are not in the PaletteMasks colors")
        classes = np.zeros(codes.shape, dtype=np.int32)
        for code in found.tolist():
            classes[codes == code] = lookup[code]
        return classes.astype(np.uint8) if len(colors) <= 256 else classes
    if array.ndim == 3:
        if mask_format == "index" and not (array == array[..., :1]).all():
            raise InputError(
                f"mask {path} is a colour image; read it with a PaletteMasks source listing its colors, "
                "or save masks as class-id or palette PNGs"
            )
        array = array.max(axis=2) if mask_format == "nonzero" else array[..., 0]
    if mask_format == "nonzero":
        return (array >= 1).astype(np.uint8)
    if mask_format == "scale255":  # 1-bit files (mode "1") read as booleans: white is True, not 255
        return (array if array.dtype == bool else array >= 128).astype(np.uint8)
    if mask_format != "index":
        raise InputError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
    array = array.astype(np.uint8) if array.dtype == bool else array
    return array.astype(np.int32) if array.max(initial=0) > 255 else array.astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    """`array` (uint8 HxW or HxWxC with 1 or 3 channels; uint16 HxW) as the bytes of a lossless PNG
    file, which `read_image` and `read_mask` read back unchanged."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    image = Image.fromarray(array.astype(np.uint16) if array.dtype != np.uint8 else array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def read_style_image(path: str | Path, style_size: int | None = None) -> torch.Tensor:
    """The style image at `path` as (1, 3, H, W) float in [0, 1], its shorter side resized to `style_size`."""
    if not Path(path).is_file():
        raise MissingInputError(f"style image {path} does not exist")
    style = to_float_tensor(read_image(path))[None]
    return resize_shorter_side(style, style_size) if style_size else style
