"""Sources that stream data converted into LitData chunks, from a local folder or an object store.

`python -m vision_lightning convert --config CONFIG --output ROOT` writes the splits of a config's
data (any source: an ImageFolder, a CSV, mask folders...) as chunks under ROOT (data/streaming.py
describes the layout); these sources read them back with the same data module, transforms and
model, so a training config changes only its `source`:

    source:
      class_path: vision_lightning.data.StreamingClassification
      init_args: {root: s3://bucket/pets}     # or a local folder

What was decided when the data was converted stays decided: the splits (validation included),
the class names and label mode (segmentation: the mask mode), and which files were readable.
Data modules refuse the options that would redo it (`val_split`, `cache_images`) with one sentence.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vision_lightning.data.base import Split
from vision_lightning.data.classification_sources import ClassificationSource, LabelMode
from vision_lightning.data.segmentation_sources import MaskSpec, SegmentationSource, SourceData
from vision_lightning.data.streaming import ConvertedData
from vision_lightning.utils.errors import InputError


class StreamingClassification(ClassificationSource):
    """Classification data converted by `python -m vision_lightning convert`, streamed by LitData.

    Args:
        root: the converted folder, or its object-store URL (`s3://bucket/path`, `gs://...`, `r2://...`).
        storage_options: LitData's options for the object store (`endpoint_url` for an S3-compatible
            store); saved with the checkpoint's hyperparameters, so keep credentials in the
            environment (`AWS_ACCESS_KEY_ID`...), not here.
        cache_dir: where downloaded chunks are cached (default: LitData's, under ~/.lightning).
    """

    label_modes = ("multiclass", "binary", "multilabel", "soft")  # as converted: see `classes`
    streamed: ClassVar[bool] = True

    def __init__(
        self, root: str, storage_options: dict[str, Any] | None = None, cache_dir: str | None = None
    ) -> None:
        self.data = ConvertedData(root, "classification", storage_options, cache_dir)
        self.init_args = {"root": root, "storage_options": storage_options, "cache_dir": cache_dir}

    @property
    def label_mode(self) -> str:
        return str(self.data.metadata["label_mode"])

    def classes(self, label_mode: LabelMode) -> list[str]:
        stored = self.label_mode
        # Class ids serve multiclass and binary alike; vectors only the mode they were written for.
        same = {stored, label_mode} <= {"multiclass", "binary"} or label_mode == stored
        if not same:
            raise InputError(
                f"{self.data.root} was converted with label_mode {stored}: train with label_mode {stored}, "
                f"or convert the data again with --data.label_mode {label_mode}"
            )
        return self.data.class_names

    def splits(
        self, class_names: list[str], label_mode: LabelMode, channels: int, image_size: int
    ) -> dict[str, Split]:
        splits = {}
        for name, size in self.data.split_sizes.items():
            splits[name] = (self.data.split(name, channels), range(size))
        return splits  # type: ignore[return-value]


class StreamingSegmentation(SegmentationSource):
    """Segmentation data converted by `python -m vision_lightning convert`, streamed by LitData: images
    with their masks as class ids (multilabel: 0/1 planes), whatever the masks were before.

    Args:
        root / storage_options / cache_dir: as `StreamingClassification`.
    """

    modes = ("binary", "multiclass", "multilabel")  # as converted: see `check_mode`
    streamed: ClassVar[bool] = True

    def __init__(
        self, root: str, storage_options: dict[str, Any] | None = None, cache_dir: str | None = None
    ) -> None:
        self.data = ConvertedData(root, "segmentation", storage_options, cache_dir)
        self.ignore_index = self.data.metadata.get("ignore_index")
        self.init_args = {"root": root, "storage_options": storage_options, "cache_dir": cache_dir}

    @property
    def location(self) -> str:
        return self.data.root

    @property
    def mode(self) -> str:
        return str(self.data.metadata["mode"])

    def check_mode(self, mode: str) -> None:
        if mode != self.mode:
            raise InputError(
                f"{self.data.root} was converted with mode {self.mode}: train with mode {self.mode}, "
                f"or convert the data again with --data.mode {mode}"
            )

    def class_count(self, asked: int | None) -> int | None:
        count = len(self.data.class_names)
        if asked is not None and asked != count:
            raise InputError(
                f"{self.data.root} has {count} classes {self.data.class_names}, but num_classes / "
                f"class_names give {asked}"
            )
        return count

    def default_class_names(self, mode: str, count: int | None) -> list[str] | None:
        return self.data.class_names

    def load(self, spec: MaskSpec) -> SourceData:
        self.check_mode(spec.mode)
        planes = spec.num_classes if spec.mode == "multilabel" else 0
        splits = {name: self.data.split(name, spec.channels, planes) for name in self.data.split_sizes}
        return SourceData(splits["train"], val=splits["val"], test=splits.get("test"))
