"""Where style-transfer content images come from, chosen in YAML by `class_path`:

- `ContentFolders`: folders of content photos (COCO train2014 in Johnson et al.);
- `SyntheticTextureContent`: generated textures (no download: quickstart, tests).

```yaml
source:
  class_path: vision_lightning.data.ContentFolders
  init_args: {train_root: data/coco/train2014}
```

Each source checks its own arguments when it is made and builds the splits when the data module sets
up (`build`): `{"train" | "val": (sample source, indices)}`, sample sources loading
`(image, None, name)`. The style image is the data module's own (`style_image`), not a source's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from vision_lightning.data.base import BadImages, Split
from vision_lightning.data.image_sets import folder_split, hold_out, texture_splits
from vision_lightning.utils.errors import InputError


class ContentSource(ABC):
    """Base of the style-transfer content sources (see the module docstring)."""

    @abstractmethod
    def build(
        self, image_size: int, val_split: float, split_seed: int, bad_images: BadImages
    ) -> dict[str, Split]:
        """The content splits for crops of `image_size`; without a validation set of its own,
        `val_split` of the training images (seeded by `split_seed`) are held out; unreadable
        images handled as `bad_images` says."""


@dataclass(frozen=True)
class ContentFolders(ContentSource):
    """Folders of content images, searched recursively.

    Args:
        train_root: the training content (COCO train2014 in the paper).
        val_root: validation content; without it the data module's `val_split` of the training
            images is held out (`val_split: 0`: no validation).
    """

    train_root: str | None = None
    val_root: str | None = None

    def __post_init__(self) -> None:
        if not (self.train_root or self.val_root):
            raise InputError("ContentFolders needs train_root (a folder of content images) or val_root")

    def build(
        self, image_size: int, val_split: float, split_seed: int, bad_images: BadImages
    ) -> dict[str, Split]:
        splits: dict[str, Split] = {}
        if self.train_root:
            source, keep = folder_split(self.train_root, f"train_root {self.train_root}", bad_images)
            splits.update(hold_out(source, keep, 0 if self.val_root else val_split, split_seed))
        if self.val_root:
            splits["val"] = folder_split(self.val_root, f"val_root {self.val_root}", bad_images)
        return splits


@dataclass(frozen=True)
class SyntheticTextureContent(ContentSource):
    """Generated textures as content (`vision_lightning.data.SyntheticTextures`), the same on every
    machine.

    Args:
        samples: textures to train on; a separate set of max(4, samples // 8) validates, so the data
            module's `val_split` does not apply.
        size: their size in pixels (square); None: the data module's `image_size` (crops are whole).
        seed: which textures (the validation set uses `seed + 1`).
    """

    samples: int = 64
    size: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"SyntheticTextureContent samples must be at least 1, got {self.samples}")
        if self.size is not None and self.size < 8:
            raise InputError(f"SyntheticTextureContent size must be at least 8 pixels, got {self.size}")

    def build(
        self, image_size: int, val_split: float, split_seed: int, bad_images: BadImages
    ) -> dict[str, Split]:
        return texture_splits(self.samples, self.size or image_size, self.seed)
