"""What every DataModule of the project shares: `image_size`, `batch_size` and the loader settings.

`image_size` and `batch_size` are plain attributes that callbacks (progressive resizing) may change
between epochs; transforms are built when a loader is built, so a new loader sees the new size.

Constructor arguments shared by every data module are few: `image_size`, `batch_size` (both may be
changed by callbacks), `loader` (a `LoaderOptions`: workers, pinned memory), `mean`/`std`, caching,
the bad-image policy and `predict_splits`. Where the data comes from is a typed *source* object
(`ImageFolder`, `MaskFolders`, ...) chosen by `class_path`, which validates its own arguments.

Mean and std left unset (None) come from the model being trained: a timm backbone's pretrained
config (ViT: 0.5, 0.5, 0.5), else ImageNet's. `[0.0]` and `[1.0]` only scale pixels to [0, 1].

Checkpoints carry `preprocessing()` (sizes, mean/std, channels, class names) so that inference from
a checkpoint alone prepares images the way training did.

`predict_splits` says what `predict` runs on: by default the predict folder, else the test split,
else validation; `predict_splits: [train, val]` predicts each named split instead, one loader per
split with evaluation transforms, in order, labels included. That is how features are extracted
for a whole data set (`embeddings_train.npy`, `embeddings_val.npy`: the writer names each loader's
files after its split).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from vision_lightning.data.batch_augment import BatchAugment, BatchAugmenter
from vision_lightning.data.datasets import CachedSource, FileSource, SampleSource, collate, skipped_paths
from vision_lightning.data.in_memory import DeviceBatches, InMemory, MemoryDataset, memory_loader
from vision_lightning.data.seeding import EpochSampler, SeededItems, run_seed
from vision_lightning.data.streaming import StreamedSplit
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import PlainHyperparameters, from_plain
from vision_lightning.utils.images import readable_images
from vision_lightning.utils.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)
Split = tuple[SampleSource, Sequence[int]]  # (samples, the indices of those in the split)
SPLIT_NAMES = ("train", "val", "test", "predict")
BadImages = Literal["skip", "error", "off"]


@dataclass(frozen=True)
class LoaderOptions:
    """How the DataLoaders read: `num_workers` processes (0: in the training process),
    `pin_memory` (used only when training on CUDA), workers kept alive between epochs."""

    num_workers: int = 0
    pin_memory: bool = True
    persistent_workers: bool = True

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise InputError(f"loader.num_workers must be 0 or more, got {self.num_workers}")


class VisionDataModule(PlainHyperparameters, pl.LightningDataModule):
    """Base of the project's data modules (see the module docstring).

    Args:
        image_size: the training size (square), changed between epochs by ProgressiveResizing.
        batch_size: the training batch size, changed with it.
        loader: worker processes and memory pinning of every loader.
        mean / std: normalisation; None: the model's own (a timm backbone's), else ImageNet's.
        cache_images: decode every image once into memory (small data sets).
        in_memory: decode each split once into a uint8 tensor at `image_size`, cached on disk
            (`true`, or `{cache_dir: ..., cache: false}`), and load batches without workers
            (data/in_memory.py); `augmentations` do not apply, `batch_augment` does.
        batch_augment: with `in_memory`, augment training batches on the device:
            `{flip: true, pad_crop: 4, cutout: 8}` or `{dihedral: true}` (data/batch_augment.py).
        bad_images: unreadable files are `skip`ped with a warning naming each, stop the run
            (`error`), or are not looked for (`off`).
        val_split / split_seed: the seeded share of the training data held out for validation
            when the data has no validation set of its own; streamed training data is shuffled
            with `split_seed` (its validation split was made when it was converted).
        predict_root: a folder of images for `predict` (default: the test set, else validation).
        predict_splits: predict these splits (`[train, val]`) instead of the predict set.

    Concrete data modules take their own arguments and pass these on (`**kwargs`), so each is
    written once; LightningCLI and `--help` show them with the module's own.
    """

    def __init__(
        self,
        image_size: int = 224,
        batch_size: int = 32,
        loader: LoaderOptions = LoaderOptions(),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        cache_images: bool = False,
        in_memory: bool | InMemory = False,
        batch_augment: BatchAugment | None = None,
        bad_images: BadImages = "skip",
        val_split: float = 0.2,
        split_seed: int = 42,
        predict_root: str | None = None,
        predict_splits: list[str] | None = None,
    ) -> None:
        super().__init__()
        if image_size < 1 or batch_size < 1:
            raise InputError(f"image_size and batch_size must be positive, got {image_size} and {batch_size}")
        if bad_images not in ("skip", "error", "off"):
            raise InputError(f"bad_images must be skip, error or off, got {bad_images!r}")
        if not 0.0 <= val_split < 1.0:
            raise InputError(f"val_split must be at least 0 and below 1, got {val_split}")
        if (mean is None) != (std is None):
            raise InputError("give both mean and std, or neither (then the model's or ImageNet's are used)")
        loader = from_plain(loader, LoaderOptions)  # a dict: from Python or saved hyperparameters
        self.predict_splits = _check_predict_splits(predict_splits)
        self.image_size = image_size
        self.batch_size = batch_size
        self.loader = loader
        self._mean, self._std = mean, std
        self.cache_images = cache_images
        self.in_memory = _in_memory_options(in_memory, batch_augment, cache_images)
        self.batch_augment = from_plain(batch_augment, BatchAugment)
        self._device_batches: DeviceBatches | None = None
        self.bad_images = bad_images
        self.val_split, self.split_seed = val_split, split_seed
        self.predict_root = Path(predict_root) if predict_root else None
        #: unreadable files left out of the predict folder (PredictionWriter lists them in its record)
        self.skipped_predict_images: list[str] = []

    def __repr__(self) -> str:
        """Named by its source, without building loaders: Lightning's `__str__` would set the data
        up (read every file) just to print it, as LightningCLI does while linking arguments."""
        source = getattr(self, "source", None)
        return f"{type(self).__name__}({source!r})" if source is not None else f"{type(self).__name__}()"

    __str__ = __repr__

    #: how a loader's items become a batch (detection keeps boxes as lists: data/detection.py)
    collate_fn = staticmethod(collate)

    @property
    def hparams_initial(self):
        """What loggers are shown, under `data/`: Lightning refuses to log a model and a data module
        that share a key with different values (`class_names` given to one of them only)."""
        initial = super().hparams_initial
        return type(initial)({f"data/{k}": v for k, v in initial.items()})

    # ----------------------------------------------------------------- preprocessing
    @property
    def mean(self) -> tuple[float, ...]:
        return self._normalisation()[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self._normalisation()[1]

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The given mean/std; else the model's `data_config` (a timm backbone's pretrained config,
        read at run time: data never imports tasks); else ImageNet's."""
        if self._mean is not None and self._std is not None:
            return tuple(self._mean), tuple(self._std)
        model = self.trainer.lightning_module if self.trainer is not None else None
        config = getattr(model, "data_config", None) or {}
        if config.get("mean") and config.get("std"):
            return tuple(config["mean"]), tuple(config["std"])
        return IMAGENET_MEAN, IMAGENET_STD

    def preprocessing(self) -> dict[str, Any]:
        """What inference needs to prepare an image as evaluation did; saved in checkpoints by the
        tasks. Subclasses add their own keys (resize, channels, scale, ...)."""
        mean, std = self._normalisation()
        return {"image_size": self.image_size, "mean": list(mean), "std": list(std)}

    def _loader(self, dataset: Dataset, train: bool = False, batch_size: int | None = None) -> DataLoader:
        """A loader of `dataset` at `batch_size` (default: the current `self.batch_size`); whole images
        of different sizes go one per batch (`batch_size=1`). A streamed split's samples are read by
        LitData's loader instead (data/streaming.py), made into items as `dataset` makes them."""
        size = len(dataset)  # type: ignore[arg-type]
        batch_size = batch_size or self.batch_size
        pin_memory = (
            self.loader.pin_memory
            and self.trainer is not None
            and self.trainer.strategy.root_device.type == "cuda"
        )
        if isinstance(dataset, MemoryDataset):  # whole batches indexed in this process (data/in_memory.py)
            sampler = self._epoch_sampler(dataset, self.run_seed) if train else None
            return memory_loader(dataset, batch_size, sampler, train and size > batch_size, pin_memory)
        source = getattr(dataset, "source", None)
        if isinstance(source, StreamedSplit):
            return source.loader(
                dataset.item,  # type: ignore[attr-defined]
                train,
                batch_size,
                self.loader.num_workers,
                pin_memory,
                self.loader.persistent_workers,
                seed=self.split_seed,
                epoch=self.trainer.current_epoch if self.trainer is not None else 0,
            )
        # Training items are seeded by (run seed, epoch, index) (data/seeding.py); every loader has a
        # generator of its own, so starting one does not draw from the training process's.
        seed = self.run_seed
        sampler = self._epoch_sampler(dataset, seed) if train else None
        return DataLoader(
            SeededItems(dataset) if train else dataset,
            batch_size=batch_size,
            collate_fn=self.collate_fn,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),
            # A last batch of one sample breaks BatchNorm in training; drop the ragged end then.
            drop_last=train and size > batch_size,
            num_workers=self.loader.num_workers,
            pin_memory=pin_memory,
            persistent_workers=self.loader.persistent_workers and self.loader.num_workers > 0,
        )

    @property
    def run_seed(self) -> int:
        """The seed of training's shuffle and augmentation: `seed_everything`'s, else drawn once;
        saved in checkpoints (`state_dict`) so that a resumed run draws what the first one would."""
        if getattr(self, "_run_seed", None) is None:
            self._run_seed = run_seed()
        return self._run_seed

    def state_dict(self) -> dict[str, Any]:
        return {"run_seed": self.run_seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "run_seed" in state_dict:
            self._run_seed = int(state_dict["run_seed"])

    @property
    def memory_crop(self) -> int | None:
        """The in-memory path's training window: None (the images are at `image_size` already), or
        a size to crop random windows of from the whole images kept in memory."""
        return None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """In-memory batches (uint8 images) on their device: training ones augmented
        (`batch_augment`), all normalised to floats; other batches pass unchanged."""
        image = batch.get("image") if isinstance(batch, dict) else None
        if self.in_memory is None or not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
            return batch
        if self._device_batches is None:
            augment, crop = self.batch_augment, self.memory_crop
            augmenter = (
                BatchAugmenter(augment or BatchAugment(), getattr(self, "ignore_index", None), crop)
                if augment or crop
                else None
            )
            self._device_batches = DeviceBatches(augmenter)
        elif self._device_batches.augmenter is not None:
            self._device_batches.augmenter.crop = self.memory_crop  # follows ProgressiveResizing
        mean, std = self._normalisation()
        return self._device_batches(batch, mean, std)

    def _epoch_sampler(self, dataset: Dataset, seed: int) -> EpochSampler:
        """This process's share of `dataset`, shuffled anew each epoch: all of it without DDP (or
        with `use_distributed_sampler: false`), else what Lightning's DistributedSampler would give."""
        trainer = self.trainer
        kwargs = {"num_replicas": 1, "rank": 0}
        if trainer is not None and trainer.world_size > 1:
            connector = trainer._accelerator_connector
            if connector.use_distributed_sampler and connector.is_distributed:
                kwargs = {"num_replicas": trainer.world_size, "rank": trainer.global_rank}
        return EpochSampler(dataset, shuffle=True, seed=seed, **kwargs)

    def _refuse_for_streamed(self, source: object) -> None:
        """Streamed data (data/streaming_sources.py) was split when it was converted, and LitData
        caches its chunks itself: the options that would split or cache it again are refused."""
        if not getattr(source, "streamed", False):
            return
        if self.in_memory is not None:
            raise InputError(
                "in_memory does not apply to streamed data: it is read chunk by chunk by LitData"
            )
        if self.cache_images:
            raise InputError(
                "cache_images does not apply to streamed data: LitData caches its chunks on disk itself"
            )
        default = inspect.signature(VisionDataModule.__init__).parameters["val_split"].default
        if self.val_split != default:
            raise InputError(
                f"val_split does not apply to streamed data: its validation split was made when it was "
                f"converted (convert it again with --data.val_split {self.val_split})"
            )

    def _setup_splits(self, stage: str | None, build: Callable[[], dict[str, Split]]) -> None:
        """`build()` the splits once (decoded into memory with `cache_images`), except when only
        predicting `predict_root`, which reads nothing of the source (its folders may be elsewhere);
        then the predict folder's images as the predict split."""
        predict_folder = stage == "predict" and self.predict_root is not None and self.predict_splits is None
        if not getattr(self, "_built", False) and not predict_folder:
            splits = build()
            sources = self._cached(splits) if self.cache_images and splits else splits
            self._sources = {**sources, **getattr(self, "_sources", {})}  # keeps a predict set read before
            self._built = True
        if stage == "predict" and self.predict_root is not None and "predict" not in self._sources:
            self._sources["predict"] = self._predict_root_split()

    def _predict_root_split(self, channels: int = 3) -> Split:
        """The readable images under `predict_root` (searched recursively) as the predict split;
        unreadable ones are skipped or stop the run as `bad_images` says."""
        paths, keep = readable_images(self.predict_root, self.bad_images, f"predict_root {self.predict_root}")
        self.skipped_predict_images = skipped_paths(paths, keep)
        return FileSource(paths, None, channels), keep

    # ----------------------------------------------------------------- loaders
    def _dataset(self, split: str, train: bool = False) -> Dataset:
        """The dataset of `split` (train, val, test, predict) with this moment's transforms."""
        raise NotImplementedError

    @staticmethod
    def _available_split(sources: dict[str, Split], split: str) -> str:
        """`split`, or for test and predict without their own data the test set, else validation."""
        if split in sources or split not in ("test", "predict"):
            return split
        return "test" if "test" in sources else "val"

    @staticmethod
    def _cached(sources: dict[str, Split]) -> dict[str, Split]:
        """Each distinct source decoded once into memory (train and val usually share one)."""
        distinct: dict[int, SampleSource] = {}
        indices: dict[int, set[int]] = {}
        for source, split_indices in sources.values():
            distinct[id(source)] = source
            indices.setdefault(id(source), set()).update(split_indices)
        cached = {key: CachedSource(source, sorted(indices[key])) for key, source in distinct.items()}
        log.info("Cached %.1f MiB of decoded images", sum(c.nbytes for c in cached.values()) / 2**20)
        return {split: (cached[id(source)], idx) for split, (source, idx) in sources.items()}

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("train", train=True), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("val"))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._dataset("test"))

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """The predict set; with `predict_splits`, one loader per named split (in that order)."""
        if self.predict_splits is None:
            return self._loader(self._dataset("predict"))
        return [self._loader(self._predict_split(split)) for split in self.predict_splits]

    def _predict_split(self, split: str) -> Dataset:
        """Split `split` with evaluation transforms, refusing the fallback `_dataset` makes for a
        missing test or predict split (its files would be named after data they do not hold)."""
        dataset = self._dataset(split)
        sources = getattr(self, "_sources", None)
        if isinstance(sources, dict) and split not in sources:
            have = ", ".join(name for name in SPLIT_NAMES if name in sources)
            hint = " (set predict_root)" if split == "predict" else ""
            raise InputError(
                f"predict_splits names {split!r}, but this data has no {split} split{hint}; it has {have}"
            )
        return dataset


def _in_memory_options(
    value: bool | InMemory | dict | None, augment: BatchAugment | dict | None, cache_images: bool
) -> InMemory | None:
    """`in_memory` as options (None: off); `batch_augment` needs it, `cache_images` is then redundant."""
    if value is True:
        value = InMemory()
    value = from_plain(value, InMemory) if value else None
    if value is not None and not isinstance(value, InMemory):
        raise InputError(f"in_memory must be true, false or {{cache_dir: ..., cache: ...}}, got {value!r}")
    if value is None and augment:
        raise InputError("batch_augment augments in-memory batches: set in_memory: true as well")
    if value is not None and cache_images:
        raise InputError("in_memory keeps decoded images in memory already: leave cache_images off")
    return value


def _check_predict_splits(splits: Sequence[str] | None) -> list[str] | None:
    if splits is None:
        return None
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown or not splits or len(set(splits)) != len(splits):
        problem = f"unknown split(s) {unknown}" if unknown else "an empty or repeated list"
        raise InputError(f"predict_splits must list distinct splits of {list(SPLIT_NAMES)}, got {problem}")
    return splits
