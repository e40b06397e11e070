"""The one image reader of the project, plus the check that finds corrupt files before training.

Images are read as people see them: a file's EXIF orientation (a phone photo saved sideways with
"rotate 90 degrees when shown") is applied by `read_image`, `read_mask` and `image_size_of` alike, so
an image, its mask and the sizes checked before training always agree. Pixels are never read any
other way in the package: whatever opens an image file goes through this module.

Every image becomes 8-bit the same way for every task (`read_image` says how: 16-bit and float
images are scaled, not clipped; transparent pixels are composited over black). Files are listed once
however folders are linked (`list_images`), and sizes past PIL's decompression-bomb limit are refused
before decoding; tiny or extremely elongated images are reported by the pre-training check.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
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


def list_images(folder: str | Path, recursive: bool = True, once: bool = True) -> list[Path]:
    """All image files under `folder`, sorted, so every run sees the same order; each file once.

    Links are followed (a data set linked into place is read), but each real file is listed once,
    under the name that crosses the fewest links (then the first in sorted order), and a link back
    to a folder being walked (a loop) is skipped with a warning instead of being walked forever.
    `once=False` lists every name of a file (masks shared by several images through links).
    """
    return [shown for shown, _ in image_files(folder, recursive, once)]


def image_files(folder: str | Path, recursive: bool = True, once: bool = True) -> list[tuple[Path, str]]:
    """(path as listed, real path) of every image file under `folder`, as `list_images` lists them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"image folder {folder} does not exist")
    found: dict[str, tuple[int, Path]] = {}  # real path -> (links crossed, shown path)
    every: list[tuple[Path, str]] = []  # once=False: every name
    walked: dict[str, int] = {}  # real folder -> the fewest links it was reached through

    def walk(directory: Path, real: str, links: int, ancestors: frozenset[str]) -> None:
        if walked.get(real, links + 1) <= links:
            return  # walked already, through as few links: its files are listed (no walk per path)
        walked[real] = links
        with os.scandir(directory) as entries:
            entries = sorted(entries, key=lambda entry: entry.name)
        for entry in entries:
            shown, linked = directory / entry.name, entry.is_symlink()
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:  # a link to nothing, or no permission: not an image we can read
                continue
            if is_file and is_image_file(entry.name):
                target = os.path.realpath(shown) if linked else os.path.join(real, entry.name)
                rank = (links + linked, shown)
                every.append((shown, target))
                if target not in found or rank < found[target]:
                    found[target] = rank
            elif is_dir and recursive:
                target = os.path.realpath(shown) if linked else os.path.join(real, entry.name)
                if target in ancestors:
                    log.warning("Not following %s: it links back to %s, a folder it is inside", shown, target)
                    continue
                walk(shown, target, links + linked, ancestors | {target})

    start = os.path.realpath(folder)
    walk(folder, start, 0, frozenset({start}))
    listed = every if not once else [(shown, real) for real, (_, shown) in found.items()]
    return sorted(listed, key=lambda item: item[0])


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


MIN_SIDE = 2  # pixels: a shorter side below this (a 1-pixel web placeholder) is reported
MAX_ASPECT = 50  # a longer side over 50 times the shorter is reported: shorter-side resizing blows it up
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(path: str | Path, message: str) -> None:
    """Log `message` the first time it is said of `path` in this process (read_image runs every epoch)."""
    with _warned_lock:
        if str(path) in _warned:
            return
        _warned.add(str(path))
    log.warning(message)


def oversize_problem(width: int, height: int) -> str | None:
    """Why an image of this size is not decoded (more pixels than PIL's decompression-bomb limit,
    `PIL.Image.MAX_IMAGE_PIXELS`, 89.5 million by default), or None."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return (
            f"{width}x{height} pixels ({width * height / 1e6:.1f} million) is more than PIL's "
            f"decompression-bomb limit of {limit / 1e6:.1f} million (raise PIL.Image.MAX_IMAGE_PIXELS to read it)"
        )
    return None


def shape_concern(width: int, height: int) -> str | None:
    """Why an image of this size is probably not what was meant (it is still used): a side under
    MIN_SIDE pixels, or an aspect ratio beyond MAX_ASPECT:1; None for ordinary sizes."""
    short, long = min(width, height), max(width, height)
    if short < MIN_SIDE:
        return f"{width}x{height} pixels, a side under {MIN_SIDE} pixels"
    if long > MAX_ASPECT * short:
        return f"{width}x{height} pixels, an aspect ratio beyond {MAX_ASPECT}:1"
    return None


def _scaled_to_uint8(values: np.ndarray, mode: str, path: str | Path) -> np.ndarray:
    """A 16-bit, 32-bit integer or float single-channel image as uint8, scaled (see `read_image`)."""
    if mode == "F":
        if not np.isfinite(values).all():
            raise InputError(f"image {path} has non-finite pixel values (NaN or infinity)")
        low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
        if low < 0:
            raise InputError(
                f"image {path} is a float image with negative values ({low:g} to {high:g}); "
                "save it with values in 0..1"
            )
        if high > 1:
            _warn_once(path, f"Float image {path} has values up to {high:g}, past 1: scaled by its maximum")
            values = values / high
        return np.rint(values * 255).astype(np.uint8)
    if mode == "I" and values.min(initial=0) < 0:
        raise InputError(f"image {path} has negative pixel values; integer images must be 0 or more")
    top = 65535 if mode in _SIXTEEN_BIT or values.max(initial=0) <= 65535 else 2**31 - 1
    return np.rint(values.astype(np.float64) * (255 / top)).astype(np.uint8)


def _over_black(image: Image.Image) -> np.ndarray:
    """An image with transparency as uint8 RGB composited over black (colour times opacity)."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint16)
    return ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)


def _pixels(image: Image.Image, mode: str, turn: int, path: str | Path) -> np.ndarray:
    """`image` (just opened) as uint8 HxW (`mode` L) or HxWx3 (RGB), upright: see `read_image`."""
    kind = image.mode
    if kind in (*_SIXTEEN_BIT, "I", "F"):
        gray = _scaled_to_uint8(np.asarray(upright(image, turn)), kind, path)
        return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=2)
    if kind in _ALPHA or "transparency" in image.info:
        rgb = _over_black(upright(image, turn))
        return np.asarray(Image.fromarray(rgb).convert("L")) if mode == "L" else rgb
    return np.asarray(upright(image.convert(mode), turn))


def read_image(path: str | Path, channels: int = 3, data: bytes | memoryview | None = None) -> np.ndarray:
    """Read an image as uint8 HxWxC with C = `channels` (1 = grayscale, 3 = RGB), upright.

    Grayscale files become RGB when 3 channels are asked for, and RGB files become grayscale when 1
    is asked for, so a model's `in_channels` decides and the files on disk do not have to agree.
    The EXIF orientation is applied: a phone photo comes out as it is shown, not as it is stored.
    `data`: the file's bytes, already read (a streamed sample); `path` then only names it.

    Pixel values are scaled to 0..255, never clipped:
    - integer images by their type's maximum: 8-bit as they are, 16-bit (PNG, TIFF) times 255/65535
      (16-bit colour is reduced so by PIL itself), 32-bit integer ones as 16-bit when their values
      fit, else by 2**31 - 1; negative values are an InputError;
    - float images (mode F, float TIFF) must be finite and not negative (else an InputError naming
      the file): values within 0..1 are taken as they are, larger ones are divided by the image's
      maximum, with a warning naming the file;
    - transparency (RGBA, LA, palette or colour-key transparency) is composited over black: a pixel
      keeps its colour times its opacity, so fully transparent pixels are black whatever colour they
      hide (PIL's `convert("RGB")` would show that hidden colour);
    - an image with more pixels than PIL's decompression-bomb limit is an InputError naming the file
      and its size, before any pixel is decoded.
    """
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"channels must be 1 or 3 to read {path}, got {channels}")
    try:
        with _opened(path, data) as file, Image.open(file) as image:  # see _pil_turns_tiffs
            too_big = oversize_problem(image.width, image.height)
            if too_big:
                raise InputError(f"image {path} is not read: {too_big}")
            turn = orientation_to_apply(image, path, decode=True)
            array = _pixels(image, mode, turn, path)
    except InputError:
        raise
    except FileNotFoundError:
        raise MissingInputError(f"image {path} does not exist") from None
    except Image.DecompressionBombError as error:
        raise InputError(
            f"image {path} is not read: {error} (raise PIL.Image.MAX_IMAGE_PIXELS to read it)"
        ) from None
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
    except Image.DecompressionBombError as error:
        raise InputError(
            f"image {path} is not read: {error} (raise PIL.Image.MAX_IMAGE_PIXELS to read it)"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:  # a PNG with late metadata is decoded
        raise InputError(f"image {path} cannot be read: {error}") from None


def to_float_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWxC to float CxHxW in [0, 1]; copies, so read-only arrays (PIL's) are fine."""
    return torch.tensor(image).permute(2, 0, 1).contiguous().float().div_(255)


def image_problem(path: str | Path) -> str | None:
    """Why `path` is not a usable image (missing, corrupt, truncated, past the decompression-bomb
    limit, float pixels that are not finite or negative), or None when it decodes fully."""
    return inspect_image(path)[0]


def inspect_image(path: str | Path) -> tuple[str | None, str | None]:
    """(why `path` is not usable or None, why its size looks wrong or None: see `shape_concern`).

    `Image.verify()` catches a broken header or structure; decoding all pixels (`load()`) catches
    truncated files, which verify does not (seed 001 found both kinds in the cats-vs-dogs set).
    """
    try:
        with Image.open(path) as image:
            too_big = oversize_problem(image.width, image.height)
            if too_big:
                return too_big, None
            image.verify()
        with Image.open(path) as image:
            image.load()
            if image.mode == "F":
                values = np.asarray(image)
                if not np.isfinite(values).all():
                    return "float pixels that are NaN or infinite", None
                if values.min(initial=0.0) < 0:
                    return "float pixels below 0", None
            return None, shape_concern(image.width, image.height)
    except FileNotFoundError:
        return "file does not exist", None
    except Exception as error:  # noqa: BLE001 - any decoder failure means the file is unusable
        return f"{type(error).__name__}: {error}", None


def find_bad_images(paths: Iterable[str | Path], workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for every file in `paths` that does not decode; checked in parallel threads.
    Usable images of a doubtful size (`shape_concern`) are named in one warning."""
    paths = [str(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(inspect_image, paths))
    odd = [f"{path} ({concern})" for path, (_, concern) in zip(paths, found) if concern is not None]
    if odd:
        log.warning(
            "%d image(s) of a doubtful size, used as they are: %s%s",
            len(odd), "; ".join(odd[:20]), f"; and {len(odd) - 20} more" if len(odd) > 20 else "",
        )  # fmt: skip
    return [(path, problem) for path, (problem, _) in zip(paths, found) if problem is not None]


def drop_bad_images(paths: Sequence[str | Path], on_bad: str, what: str) -> list[int]:
    """Indices of the usable images in `paths`; bad ones are reported by path and skipped or fatal.

    `on_bad` is "skip" (warn, naming every file, and go on without them), "error" (stop) or "off"
    (do not check). `what` names the data set in the messages. Besides files that do not decode,
    bad are images past PIL's decompression-bomb limit and float images with NaN, infinite or
    negative pixels; images with a side under MIN_SIDE pixels or an aspect ratio beyond MAX_ASPECT:1
    are used, with a warning naming them.
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
            too_big = oversize_problem(image.width, image.height)
            if too_big:
                raise InputError(f"mask {path} is not read: {too_big}")
            turn, mode = orientation_to_apply(image, path, decode=True), image.mode
            if mask_format != "colors" and mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                array = np.asarray(upright(image, turn))  # palette indices / gray values, not converted
            else:
                array = np.asarray(upright(image.convert("RGB"), turn))
    except InputError:
        raise
    except FileNotFoundError:
        raise MissingInputError(f"mask {path} does not exist") from None
    except Image.DecompressionBombError as error:
        raise InputError(
            f"mask {path} is not read: {error} (raise PIL.Image.MAX_IMAGE_PIXELS to read it)"
        ) from None
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
