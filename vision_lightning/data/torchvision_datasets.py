"""Torchvision classification data sets by name, with their class names known before any download
(so the CLI can link `num_classes` into the model at construction)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torchvision.datasets as tvd

from vision_lightning.utils.errors import DownloadError, InputError, MissingInputError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_CLASSES = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark
shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone
television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
PET_CLASSES = [
    "Abyssinian", "American Bulldog", "American Pit Bull Terrier", "Basset Hound", "Beagle", "Bengal", "Birman",
    "Bombay", "Boxer", "British Shorthair", "Chihuahua", "Egyptian Mau", "English Cocker Spaniel",
    "English Setter", "German Shorthaired", "Great Pyrenees", "Havanese", "Japanese Chin", "Keeshond",
    "Leonberger", "Maine Coon", "Miniature Pinscher", "Newfoundland", "Persian", "Pomeranian", "Pug", "Ragdoll",
    "Russian Blue", "Saint Bernard", "Samoyed", "Scottish Terrier", "Shiba Inu", "Siamese", "Sphynx",
    "Staffordshire Bull Terrier", "Wheaten Terrier", "Yorkshire Terrier",
]  # fmt: skip


@dataclass(frozen=True)
class TorchvisionSpec:
    factory: Callable[..., Any]  # (root, split: str, download) -> dataset of (PIL image, int)
    classes: list[str]
    channels: int
    splits: tuple[str, ...]  # train, [val,] test


def _train_flag(cls):
    return lambda root, split, download: cls(root, train=split == "train", download=download)


def _split_arg(cls):
    return lambda root, split, download: cls(root, split=split, download=download)


TORCHVISION_DATASETS: dict[str, TorchvisionSpec] = {
    "MNIST": TorchvisionSpec(_train_flag(tvd.MNIST), [str(i) for i in range(10)], 1, ("train", "test")),
    "FashionMNIST": TorchvisionSpec(_train_flag(tvd.FashionMNIST), list(tvd.FashionMNIST.classes), 1, ("train", "test")),
    "CIFAR10": TorchvisionSpec(_train_flag(tvd.CIFAR10), CIFAR10_CLASSES, 3, ("train", "test")),
    "CIFAR100": TorchvisionSpec(_train_flag(tvd.CIFAR100), CIFAR100_CLASSES, 3, ("train", "test")),
    "OxfordIIITPet": TorchvisionSpec(_split_arg(tvd.OxfordIIITPet), PET_CLASSES, 3, ("trainval", "test")),
    "Flowers102": TorchvisionSpec(_split_arg(tvd.Flowers102), list(tvd.Flowers102.classes), 3, ("train", "val", "test")),
}  # fmt: skip


def torchvision_spec(name: str) -> TorchvisionSpec:
    if name not in TORCHVISION_DATASETS:
        raise InputError(f"unknown torchvision dataset {name!r}; known: {', '.join(TORCHVISION_DATASETS)}")
    return TORCHVISION_DATASETS[name]


def open_torchvision_dataset(name: str, root: str | Path, split: str, download: bool):
    """The torchvision data set, with one clear sentence when it is missing or cannot be downloaded."""
    spec = torchvision_spec(name)
    try:
        return spec.factory(str(root), split, download)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted. You can use download=True"
        if download:
            raise
        raise MissingInputError(
            f"torchvision dataset {name} not found under {root}: set download: true, or place its files there"
        ) from error
    except OSError as error:  # URLError, socket errors: no internet access
        raise DownloadError(
            f"could not download torchvision dataset {name} to {root} ({error}); without internet access, "
            f"download it on another machine and copy it under {root}, then set download: false"
        ) from None


class TorchvisionSource:
    """A torchvision data set as (uint8 HxWxC image, class id, name) samples."""

    def __init__(self, dataset: Any, name: str, split: str, channels: int = 3) -> None:
        self.dataset, self.name, self.split, self.channels = dataset, name, split, channels

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> tuple[np.ndarray, int, str]:
        image, label = self.dataset[index]
        array = np.asarray(image.convert("L" if self.channels == 1 else "RGB"))
        return (
            (array[..., None] if self.channels == 1 else array),
            int(label),
            f"{self.name}/{self.split}/{index:06d}",
        )

    @property
    def targets(self) -> list[int]:
        for attribute in ("targets", "_labels"):
            if hasattr(self.dataset, attribute):
                return [int(t) for t in getattr(self.dataset, attribute)]
        return [self.load(i)[1] for i in range(len(self))]
