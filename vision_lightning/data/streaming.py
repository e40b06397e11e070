"""Data converted into LitData chunks: the folder layout, its `dataset.json`, and the streaming loaders.

`python -m vision_lightning convert` (data/streaming_convert.py) writes the splits of a data module
as LitData's optimized chunks:

    <root>/dataset.json       what the data is: the task, class names, label or mask mode, split sizes
    <root>/train/index.json   LitData's index of the split's chunks
    <root>/train/chunk-*.bin  the samples: the image file's own bytes (its JPEG / PNG, or a PNG of
                              generated pixels), the label (class id or vector) or the mask (a
                              class-id PNG), and the sample's name
    <root>/val/...  <root>/test/...

`<root>` is a local folder or an object-store URL (`s3://`, `gs://`, `r2://`). LitData downloads
the chunks as they are read into a local cache it keeps to a size (`max_cache_size`, by default
a share of the free disk), so a data set far larger than one machine's disk trains.

The sources (data/streaming_sources.py) read `dataset.json` only. Each split is a `StreamedSplit`,
read by a LitData `StreamingDataset` (an `IterableDataset`) through its `StreamingDataLoader`,
which, unlike torch's `DataLoader`: tells the data set the epoch (a new shuffle every epoch, where
Lightning only sets the epoch of samplers), its batch size and workers (each worker reads whole
chunks of its own), and saves its position in Lightning's checkpoints (a run resumes mid-epoch).
Under DDP Lightning adds no `DistributedSampler` to an iterable data set; LitData gives each rank
its own chunks instead: equal shares for training (the ragged end dropped, so no rank waits in a
collective), every sample exactly once for validation, test and predict (ranks may differ by a
few samples). The data set is made when Lightning asks for a loader, after the processes joined.

litdata is imported only here, inside functions: `import vision_lightning` does not pay for it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vision_lightning.data.datasets import collate
from vision_lightning.utils.errors import DownloadError, InputError, MissingInputError
from vision_lightning.utils.images import read_image, read_mask

METADATA = "dataset.json"
FORMAT = 1  # the layout version written into dataset.json
OBJECT_STORES = ("s3", "gs", "r2")
TASKS = ("classification", "segmentation")
CONVERT = "python -m vision_lightning convert"


def is_url(root: str) -> bool:
    return "://" in root


def join(root: str, *parts: str) -> str:
    """`root/part/...` for a folder or a URL."""
    return "/".join([root.rstrip("/"), *parts]) if is_url(root) else str(Path(root, *parts))


def check_root(root: str, what: str) -> str:
    """`root` if it names a local folder or an object-store URL LitData reads; else one sentence."""
    if not root:
        raise InputError(f"{what} needs root: the folder or object-store URL that `{CONVERT}` wrote")
    if is_url(root):
        scheme = root.split("://", 1)[0]
        if scheme not in OBJECT_STORES or not root.split("://", 1)[1].strip("/"):
            stores = ", ".join(f"{s}://bucket/path" for s in OBJECT_STORES)
            raise InputError(f"{what} root {root!r} is not a local folder or an object-store URL ({stores})")
        return root.rstrip("/")
    if not Path(root).is_dir():
        raise MissingInputError(f"streamed data folder {root} does not exist")
    return root


def object_store(url: str, storage_options: dict[str, Any] | None = None) -> Any:
    """LitData's client of the object store at `url`, failing within seconds when it cannot be
    reached (LitData's own retries for chunk downloads can last minutes)."""
    from litdata.streaming.fs_provider import _get_fs_provider

    options = dict(storage_options or {})
    if url.startswith("s3://"):
        import botocore.config

        options.setdefault(
            "config", botocore.config.Config(retries={"max_attempts": 2}, connect_timeout=10, read_timeout=30)
        )
    return _get_fs_provider(url, options)


def unreachable(url: str, error: BaseException) -> DownloadError:
    """One sentence for an object store that could not be read or written (offline, no credentials,
    no client library)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, ImportError):
        scheme = url.split("://", 1)[0]
        return DownloadError(
            f"reading {scheme}:// URLs needs a client library that is not installed ({reason})"
        )
    return DownloadError(
        f"cannot reach {url} ({type(error).__name__}: {reason}): check the network and the store's "
        "credentials (environment variables or storage_options), or copy the converted folder to this "
        "machine and give its local path"
    )


def read_metadata(root: str, task: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`root/dataset.json`, checked to describe converted `task` data."""
    path = join(root, METADATA)
    if is_url(root):
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / METADATA
            try:
                object_store(path, storage_options).download_file(path, str(local))
                text = local.read_text()
            except Exception as error:  # noqa: BLE001 - any client failure: one sentence
                if "404" in str(error) or "NoSuchKey" in str(error) or "Not Found" in str(error):
                    raise InputError(f"{root} has no {METADATA}: it was not written by `{CONVERT}`") from None
                raise unreachable(path, error) from None
    else:
        if not Path(path).is_file():
            raise InputError(f"{root} has no {METADATA}: it is not a folder written by `{CONVERT}`")
        text = Path(path).read_text()
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path} is not valid JSON: {error}") from None
    if (
        not isinstance(metadata, dict)
        or metadata.get("format") != FORMAT
        or metadata.get("task") not in TASKS
    ):
        raise InputError(f"{path} is not a {METADATA} that `{CONVERT}` writes (format {FORMAT})")
    if metadata["task"] != task:
        raise InputError(f"{root} holds {metadata['task']} data, not {task} data")
    return metadata


def write_metadata(
    root: str, metadata: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> None:
    """`metadata` as `root/dataset.json`, written last: a folder with it is complete."""
    text = json.dumps({"format": FORMAT, **metadata}, indent=2)
    path = join(root, METADATA)
    if not is_url(root):
        Path(path).write_text(text)
        return
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / METADATA
        local.write_text(text)
        try:
            object_store(path, storage_options).upload_file(str(local), path)
        except Exception as error:  # noqa: BLE001 - any client failure: one sentence
            raise unreachable(path, error) from None


class ConvertedData:
    """A converted data set: `root`, its `dataset.json`, and where LitData caches what it downloads.

    Args:
        root: the local folder or object-store URL `convert` wrote.
        task: `classification` or `segmentation`: the data must be of this task.
        storage_options: LitData's options for the object store (an `endpoint_url` for MinIO...).
        cache_dir: where downloaded chunks are kept (default: LitData's).
    """

    def __init__(
        self,
        root: str,
        task: str,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.root = check_root(root, f"Streaming{task.capitalize()}")
        self.storage_options, self.cache_dir = storage_options, cache_dir
        self.metadata = read_metadata(self.root, task, storage_options)
        self.split_sizes: dict[str, int] = dict(self.metadata.get("splits") or {})
        if "train" not in self.split_sizes or "val" not in self.split_sizes:
            raise InputError(
                f"{join(self.root, METADATA)} lists no train and val splits: convert the data again"
            )
        if not is_url(self.root):
            for name in self.split_sizes:
                if not Path(self.root, name, "index.json").is_file():
                    raise InputError(
                        f"{Path(self.root, name)} has no LitData chunks (no index.json): convert the data again"
                    )

    @property
    def class_names(self) -> list[str]:
        return [str(name) for name in self.metadata["class_names"]]

    def split(self, name: str, channels: int, planes: int = 0) -> StreamedSplit:
        """Split `name`, its images read with `channels` (masks of `planes` 0/1 planes: multilabel)."""
        return StreamedSplit(
            join(self.root, name),
            self.split_sizes[name],
            self.metadata["task"],
            channels,
            planes,
            self.storage_options,
            self.cache_dir,
        )


class StreamedSplit:
    """One split of converted data: where its chunks are, how many samples, how they decode.

    A sample source like the others (`len`, `load(index)` for random access), but data modules
    iterate it through `loader`, which streams the chunks in order instead of seeking samples.
    """

    def __init__(
        self,
        url: str,
        length: int,
        task: str,
        channels: int = 3,
        planes: int = 0,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.url, self.length, self.task = url, length, task
        self.channels, self.planes = channels, planes
        self.storage_options, self.cache_dir = storage_options, cache_dir
        self._random_access: Any = None

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"StreamedSplit({self.url!r}, {self.length} samples)"

    def files(self, index: int) -> list[str]:
        return []  # checked when converted

    def problem(self, index: int) -> str | None:
        return None  # checked when converted

    def decode(self, sample: dict[str, Any]) -> tuple[np.ndarray, Any, str]:
        """(uint8 HxWxC image, target, name) of a sample as stored: the image file's bytes read by
        the project's one reader; a class id or vector; a class-id mask (multilabel: its planes
        stacked vertically, as `convert` wrote them)."""
        name = bytes(sample["name"]).decode()
        image = read_image(name, self.channels, data=sample["image"])
        if self.task == "classification":
            label = sample["label"]
            return image, (np.asarray(label, dtype=np.float32) if np.ndim(label) else int(label)), name
        mask = read_mask(f"the mask of {name}", data=sample["mask"])
        if self.planes:
            mask = mask.reshape(self.planes, -1, mask.shape[1]).transpose(1, 2, 0)
        return image, mask, name

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        if self._random_access is None:
            self._random_access = self.dataset()
        return self.decode(self._random_access[index])

    def dataset(self, transform: Callable | None = None, shuffle: bool = False, seed: int = 42) -> Any:
        """LitData's `StreamingDataset` of the split; `transform` makes each stored sample an item."""
        from litdata import StreamingDataset

        try:
            return StreamingDataset(
                self.url,
                cache_dir=self.cache_dir,
                storage_options=self.storage_options,
                shuffle=shuffle,
                seed=seed,
                transform=transform,
            )
        except (FileNotFoundError, ValueError) as error:
            raise InputError(f"cannot stream {self.url}: {str(error).splitlines()[0]}") from None
        except Exception as error:  # noqa: BLE001 - an object store's client failure: one sentence
            raise unreachable(self.url, error) from None

    def loader(
        self,
        make_item: Callable[[np.ndarray, Any, str], dict[str, Any]],
        train: bool,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int = 42,
        epoch: int = 0,
    ) -> Any:
        """A `StreamingDataLoader` of batches of `make_item(image, target, name)`; training shuffles
        (seeded, anew each epoch: `epoch` continues the count when loaders are rebuilt between
        epochs) and keeps full batches only."""
        from litdata import StreamingDataLoader

        dataset = self.dataset(StreamedItem(self, make_item), shuffle=train, seed=seed)
        loader = StreamingDataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            # Training: full batches (a batch of one breaks BatchNorm; DDP ranks step together).
            drop_last=train and self.length > batch_size,
            collate_fn=collate,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
        )
        loader.current_epoch = epoch  # the loader counts on from here, one per pass
        return loader


class StreamedItem:
    """A stored sample decoded and made a batch item (a class, not a closure: workers may pickle it)."""

    def __init__(
        self, split: StreamedSplit, make_item: Callable[[np.ndarray, Any, str], dict[str, Any]]
    ) -> None:
        self.split, self.make_item = split, make_item

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return self.make_item(*self.split.decode(sample))
