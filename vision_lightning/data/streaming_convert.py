"""`python -m vision_lightning convert`: a data module's splits written as LitData chunks, to stream.

    python -m vision_lightning convert --config configs/classification/cifar10_folder.yaml \\
        --output s3://bucket/cifar10            # or a local folder
    python -m vision_lightning convert --data ImageClassificationDataModule \\
        --data.source ImageFolder --data.source.root data/pets --output chunks/pets

The data is built by the data module of the config's `data:` section (the rest of the config is
not read), with its own source: whatever it reads (an ImageFolder, a label CSV, mask folders, RLE
masks, a torchvision data set...) is converted by the code that reads it for training. The splits
are the module's: a source without a validation set is split by `val_split` / `split_seed` now,
once; unreadable files are skipped (or stop the conversion) as `bad_images` says; segmentation
masks are checked as before training. Each split goes to `<output>/<split>/` through
`litdata.optimize`, then `<output>/dataset.json`, written last (data/streaming.py describes the
layout). Unlabelled images found with the data (ISBI's `test/`) are not converted: predict them
with `predict_root`.

Images are stored as the bytes of their files (a JPEG stays that JPEG); generated or torchvision
images as PNGs. Labels are stored as the module's targets (a class id, or a vector for multilabel
and soft labels); masks as class-id PNGs, whatever their format was (`scale255`, colours, RLE).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vision_lightning.data.base import VisionDataModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.datasets import SampleSource
from vision_lightning.data.segmentation import SegmentationDataModule
from vision_lightning.data.streaming import (
    check_root,
    is_url,
    join,
    object_store,
    unreachable,
    write_metadata,
)
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import png_bytes

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class StoredSample:
    """Sample `index` of a split as stored in a chunk: `{"image": file bytes, "label" | "mask", "name"}`
    (a class, not a closure: LitData's workers may pickle it)."""

    def __init__(self, source: SampleSource, task: str) -> None:
        self.source, self.task = source, task

    def __call__(self, index: int) -> dict[str, Any]:
        paths = getattr(self.source, "paths", None)
        targets = getattr(self.source, "targets", None)
        if self.task == "classification" and paths is not None and targets is not None:
            image, target, name = None, targets[index], paths[index]  # the file is read as it is
        else:
            image, target, name = self.source.load(index)
        data = Path(paths[index]).read_bytes() if paths is not None else png_bytes(image)
        # The name as UTF-8 bytes: LitData would store a string ending in .png as that image file.
        sample: dict[str, Any] = {"image": data, "name": str(name).encode()}
        if self.task == "classification":
            sample["label"] = np.asarray(target, dtype=np.float32) if np.ndim(target) else int(target)
        else:
            mask = np.asarray(target)
            if mask.ndim == 3:  # multilabel 0/1 planes, stacked vertically into one image
                mask = mask.transpose(2, 0, 1).reshape(-1, mask.shape[1])
            sample["mask"] = png_bytes(mask)
        return sample


def _task(data: VisionDataModule) -> str:
    if isinstance(data, ImageClassificationDataModule):
        return "classification"
    if isinstance(data, SegmentationDataModule):
        return "segmentation"
    raise InputError(
        f"convert reads ImageClassificationDataModule or SegmentationDataModule data, got {type(data).__name__}"
    )


def _check_output(output: str, storage_options: dict[str, Any] | None) -> str:
    """`output` if it is a new or empty folder, or an empty place in a reachable object store."""
    if not output:
        raise InputError("convert needs an output: a new local folder or an object-store URL")
    if is_url(output):
        output = check_root(output, "convert output")
        try:  # fails within seconds when offline, before any image is read
            empty = object_store(output, storage_options).is_empty(output)
        except Exception as error:
            raise unreachable(output, error) from None
    else:
        folder = Path(output)
        empty = not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
    if not empty:
        raise InputError(f"output {output} already exists and is not empty: convert writes a new folder")
    return output


def _failure(error: Exception, where: str) -> InputError | None:
    """One sentence for a failed `optimize`, or None to show the error as it is: the error of a sample
    in a LitData worker (which LitData re-raises as a traceback in text), or an object store out of reach."""
    if isinstance(error, InputError):
        return error
    if isinstance(error, RuntimeError):
        cause = re.search(r"^(?:\w+\.)*(\w+(?:Error|Exception)): (.+)$", str(error), re.MULTILINE)
        if cause is not None and "Traceback" in str(error):
            kind, message = cause.groups()
            reason = message if kind in ("InputError", "MissingInputError") else f"{kind}: {message}"
            return InputError(f"converting {where} failed: {reason}")
    return unreachable(where, error) if is_url(where) else None


def _metadata(data: VisionDataModule, task: str, sizes: dict[str, int]) -> dict[str, Any]:
    common = {
        "task": task,
        "class_names": list(data.class_names),
        "splits": sizes,
        "source": repr(data.source),
    }
    if isinstance(data, ImageClassificationDataModule):
        return {**common, "label_mode": data.label_mode}
    assert isinstance(data, SegmentationDataModule)
    return {**common, "mode": data.mode, "ignore_index": data.ignore_index}


def convert(
    data: VisionDataModule,
    output: str,
    workers: int | None = None,
    chunk_bytes: str | int = "64MB",
    storage_options: dict[str, Any] | None = None,
    verbose: bool = True,
) -> dict[str, int]:
    """Write the train, val and (when there is one) test split of `data` as LitData chunks under
    `output` (a new local folder or an object-store URL); returns each split's sample count.

    Args:
        data: a classification or segmentation data module, not yet set up (`cache_images` is
            not used: every image is read once anyway).
        workers: processes writing chunks (default: one per CPU).
        chunk_bytes: the size of a chunk (LitData's advice: tens of MB, so each download is worth it).
        storage_options: LitData's options for an object-store `output`.
    """
    task = _task(data)
    if getattr(data.source, "streamed", False):
        raise InputError(f"{data.source!r} is converted data already: stream it, there is nothing to convert")
    output = _check_output(output, storage_options)
    from litdata import optimize

    data.cache_images = False
    data.prepare_data()
    data.setup()
    splits = {name: data._sources[name] for name in SPLITS if name in data._sources}
    # Forked workers start at once and share the sources; spawn (LitData's default) elsewhere.
    fork = sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()
    sizes = {}
    for name, (source, indices) in splits.items():
        count = len(indices)
        log.info("Converting the %s split: %d samples into %s", name, count, join(output, name))
        try:
            optimize(
                fn=StoredSample(source, task),
                inputs=list(indices),
                output_dir=join(output, name),
                chunk_bytes=chunk_bytes,
                num_workers=max(1, min(workers or os.cpu_count() or 1, count)),
                start_method="fork" if fork else None,
                storage_options=storage_options or {},
                verbose=verbose,
            )
        except Exception as error:
            failure = _failure(error, join(output, name))
            if failure is None:
                raise
            raise failure from None
        sizes[name] = count
    write_metadata(output, _metadata(data, task, sizes), storage_options)
    return sizes
