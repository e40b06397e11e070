"""The samples behind the segmentation sources: paired image/mask files, RLE rows, synthetic shapes.

Each loads `(uint8 HxWxC image, mask, name)`: masks are HxW class ids (binary: 0/1) or HxWxC
0/1 planes for multilabel. `files(index)` lists the files a sample reads (checked for unreadable
images up front) and `problem(index)` says what is wrong with it (sizes that differ, mask values
outside the classes, an RLE past the end of the image) without training on it, so a data module
can check every sample before the first epoch and report them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision_lightning.data.synthetic import ShapeImages
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import image_size_of, list_images, read_image, read_mask
from vision_lightning.utils.rle import rle_decode_many

IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "gt")


def value_problem(mask: np.ndarray, num_classes: int, ignore_index: int | None, name: str) -> str | None:
    """Why `mask` holds values that are not class ids, or None."""
    values = np.unique(mask)
    bad = [v for v in values.tolist() if not (0 <= v < num_classes or v == ignore_index)]
    if not bad:
        return None
    hint = "; for 0/255 masks set mask_format: scale255 (or nonzero)" if max(bad) == 255 else ""
    return (
        f"mask {name} has value(s) {bad[:6]} but there are {num_classes} classes "
        f"(ids 0..{num_classes - 1}){hint}"
    )


class PairedFileSource:
    """Images and their mask files."""

    def __init__(
        self,
        images: Sequence[Path],
        masks: Sequence[Path],
        channels: int,
        mask_format: str,
        mask_colors: Sequence[Sequence[int]] | None,
        num_classes: int,
        ignore_index: int | None,
        check_values: bool = True,
    ) -> None:
        self.paths, self.mask_paths = [str(p) for p in images], [str(p) for p in masks]
        self.channels, self.mask_format, self.mask_colors = channels, mask_format, mask_colors
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.check_values = check_values

    def __len__(self) -> int:
        return len(self.paths)

    def files(self, index: int) -> list[str]:
        return [self.paths[index], self.mask_paths[index]]

    def _mask(self, index: int) -> np.ndarray:
        return read_mask(self.mask_paths[index], self.mask_format, self.mask_colors)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image, mask = read_image(self.paths[index], self.channels), self._mask(index)
        if image.shape[:2] != mask.shape:
            raise InputError(self._size_problem(index, image.shape[:2], mask.shape))
        return image, mask, self.paths[index]

    def _size_problem(self, index: int, image: tuple[int, int], mask: tuple[int, int]) -> str:
        return (
            f"mask {self.mask_paths[index]} is {mask[1]}x{mask[0]} but its image {self.paths[index]} is "
            f"{image[1]}x{image[0]} (width x height)"
        )

    def problem(self, index: int) -> str | None:
        """Sizes are always compared; mask values only with `check_values` (it reads every mask)."""
        image, mask = image_size_of(self.paths[index]), image_size_of(self.mask_paths[index])
        if image != mask:
            return self._size_problem(index, image, mask)
        if not self.check_values:
            return None
        return value_problem(self._mask(index), self.num_classes, self.ignore_index, self.mask_paths[index])


class RleSource:
    """Images with masks as RLE strings (a Kaggle CSV): per image, a list of (class id, rle)."""

    def __init__(
        self,
        images: Sequence[Path],
        runs: Sequence[list[tuple[int, str, str]]],
        channels: int,
        mode: str,
        num_classes: int,
        rle_format: str,
        rle_order: str,
    ) -> None:
        self.paths, self.runs = [str(p) for p in images], list(runs)
        self.channels, self.mode, self.num_classes = channels, mode, num_classes
        self.rle_format, self.rle_order = rle_format, rle_order

    def __len__(self) -> int:
        return len(self.paths)

    def files(self, index: int) -> list[str]:
        return [self.paths[index]]

    def mask(self, index: int, shape: tuple[int, int]) -> np.ndarray:
        """Decode the image's runs: binary unions them, multiclass paints class ids in row order,
        multilabel stacks one plane per class."""
        planes = np.zeros((*shape, self.num_classes), dtype=np.uint8) if self.mode == "multilabel" else None
        mask = np.zeros(shape, dtype=np.uint8)
        for class_id, rle, where in self.runs[index]:
            decoded = rle_decode_many([rle], shape, self.rle_format, self.rle_order, where).astype(bool)
            if planes is not None:
                planes[..., class_id] |= decoded
            else:
                mask[decoded] = class_id
        return planes if planes is not None else mask

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image = read_image(self.paths[index], self.channels)
        return image, self.mask(index, image.shape[:2]), self.paths[index]

    def problem(self, index: int) -> str | None:
        try:
            self.mask(index, image_size_of(self.paths[index]))
        except InputError as error:
            return str(error)
        return None


class SyntheticMaskSource:
    """Synthetic shapes and their masks: binary = the shape, multiclass = 1 + its kind
    (0 is background), multilabel = one plane per kind."""

    def __init__(self, shapes: ShapeImages, mode: str, name: str = "synthetic") -> None:
        self.shapes, self.mode, self.name = shapes, mode, name

    def __len__(self) -> int:
        return len(self.shapes)

    def files(self, index: int) -> list[str]:
        return []

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        image, label, mask = self.shapes.sample(index)
        if self.mode == "binary":
            target = mask.astype(np.uint8)
        elif self.mode == "multiclass":
            target = (mask * (label + 1)).astype(np.uint8)
        else:
            target = np.zeros((*mask.shape, self.shapes.num_classes), dtype=np.uint8)
            target[..., label] = mask
        return image, target, f"{self.name}/{index:06d}"

    def problem(self, index: int) -> str | None:
        return None


def find_subfolder(
    folder: Path, names: Sequence[str], chosen: str | None, must_exist: bool = True
) -> Path | None:
    if chosen is not None:
        path = folder / chosen
        if not path.is_dir():
            if not must_exist:
                return None
            raise MissingInputError(f"folder {path} does not exist")
        return path
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def pair_images_and_masks(
    folder: Path,
    image_dir: str | None,
    mask_dir: str | None,
    mask_suffix: str,
    mask_extension: str | None,
    unlabelled_ok: bool = False,
) -> tuple[list[Path], list[Path] | None]:
    """Images of a split folder and their masks, matched by name.

    Images are in `folder/<image_dir>` (default: images/, image/, imgs/, img/, else `folder`
    itself); masks in `folder/<mask_dir>` (default: masks/, mask/, labels/, label/, annotations/,
    gt/; ISBI's `label/` beside `image/`), or beside the images when `mask_suffix` is set
    (`<id>_mask.png` next to `<id>.png`). The mask of `a.jpg` is `a<mask_suffix>.<ext>`, with
    `mask_extension` when given, else any image extension. Returns masks None for a folder
    without masks (images to predict).
    """
    # An unlabelled split may hold its images directly (ISBI's flat test/) even when image_dir is set.
    image_folder = find_subfolder(folder, IMAGE_DIRS, image_dir, must_exist=not unlabelled_ok) or folder
    mask_folder = find_subfolder(folder, MASK_DIRS, mask_dir, must_exist=False)  # none: unlabelled
    if mask_folder is None and mask_suffix:
        mask_folder = image_folder
    images = list_images(image_folder, recursive=False)
    if mask_folder == image_folder:
        images = [p for p in images if not p.stem.endswith(mask_suffix)]
    if not images:
        raise InputError(f"image folder {image_folder} has no images")
    if mask_folder is None:
        return images, None
    extension = mask_extension.lower() if mask_extension else None
    if extension and not extension.startswith("."):
        extension = "." + extension
    masks: dict[str, Path] = {}
    for path in list_images(mask_folder, recursive=False, once=False):  # masks may be shared
        if extension is None or path.suffix.lower() == extension:
            masks.setdefault(path.stem, path)
    paired = [masks.get(p.stem + mask_suffix) for p in images]
    if mask_folder == image_folder and not any(paired):
        return images, None  # masks are looked for beside the images and there are none: unlabelled
    missing = [str(p) for p, m in zip(images, paired) if m is None]
    if missing:
        pattern = f"<name>{mask_suffix}{extension or '.<any image extension>'}"
        raise InputError(
            f"{len(missing)} image(s) have no mask in {mask_folder} (looked for {pattern}): "
            + ", ".join(missing[:5])
            + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        )
    return images, [m for m in paired if m is not None]


def group_keys(names: Sequence[str], pattern: str) -> list[str]:
    """The group of each name: the regex's first group (or whole match) searched in the name."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InputError(f"group_pattern {pattern!r} is not a valid regular expression: {error}") from None
    keys = []
    for name in names:
        match = regex.search(Path(name).name)
        if match is None:
            raise InputError(f"group_pattern {pattern!r} does not match {name}")
        keys.append(match.group(1) if regex.groups else match.group(0))
    return keys
