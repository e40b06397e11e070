"""FeatureMapLogger: what a network sees, in TensorBoard (seeds 001 and 002).

Two pictures: the first convolution's filters as a grid (RGB for 3-channel input, else each filter's
first input channel), and the feature maps of a few sample images at named layers (a row per image:
the image, then one tile per channel). Each filter and each map is stretched to its own min..max,
so weak and strong channels are equally visible, and enlarged with nearest-neighbour so 3x3 kernels
and 7x7 maps stay crisp.

They are drawn from the first validation batch at the end of each validation epoch while fitting
or validating (not during the sanity check) and from the first predict batch, so the callback
works with FeatureExtractModule, ClassifierModule, SegmentationModule and SuperResModule alike.
Layer names resolve against `pl_module.backbone` first (`layer3`, `features.22`), then against the
module itself (`model.decoder`). Images go through `log_image`: any logger that stores images,
nothing without one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch import Tensor, nn

from vision_lightning.models.layers import capture_outputs, find_layer, layer_names_hint
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.visualize import to_uint8_images

log = logging.getLogger(__name__)
IMAGE_KEYS = ("image", "lr")  # the network's input in a batch: images, or LR images for super-resolution
BACKGROUND = 32
PAD = 2  # pixels between tiles


def _stretch(tiles: Tensor) -> np.ndarray:
    """(N, ..., H, W) floats -> uint8, each of the N tiles stretched to its own min..max."""
    flat = tiles.detach().float().cpu().flatten(1)
    low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
    scaled = (flat - low) / (high - low).clamp_min(1e-8)
    return (scaled.view_as(tiles) * 255).round().to(torch.uint8).numpy()


def tile_scale(height: int, width: int, min_tile: int) -> int:
    """The integer enlargement that makes the longer side of a tile at least `min_tile` pixels."""
    return max(1, -(-min_tile // max(height, width)))


def enlarge(tile: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (crisp 3x3 kernels and 7x7 maps)."""
    return tile.repeat(scale, axis=0).repeat(scale, axis=1)


def tile_grid(tiles: Sequence[np.ndarray], columns: int, pad: int = PAD) -> np.ndarray:
    """HWC uint8 grid of equally sized HxW (grey) or HxWx3 uint8 tiles, row-major, `pad` pixels
    apart on a dark background: (pad + rows * (H + pad)) x (pad + columns * (W + pad))."""
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    canvas = np.full((pad + rows * (height + pad), pad + columns * (width + pad), 3), BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = pad + (i // columns) * (height + pad), pad + (i % columns) * (width + pad)
        canvas[y : y + height, x : x + width] = tile[..., None] if tile.ndim == 2 else tile
    return canvas


def filter_grid(weight: Tensor, min_tile: int = 24) -> np.ndarray:
    """The filters of a conv weight (out, in, kh, kw) as a square-ish grid: RGB tiles for 3 input
    channels, else each filter's first input channel in grey; each filter stretched on its own."""
    kernels = weight.detach().float().cpu()
    kernels = kernels.permute(0, 2, 3, 1) if kernels.shape[1] == 3 else kernels[:, 0]
    scale = tile_scale(kernels.shape[1], kernels.shape[2], min_tile)
    tiles = [enlarge(tile, scale) for tile in _stretch(kernels)]
    return tile_grid(tiles, columns=int(np.ceil(np.sqrt(len(tiles)))))


def feature_map_grid(
    images: np.ndarray, maps: Tensor, max_channels: int = 16, min_tile: int = 48
) -> np.ndarray:
    """A row per image: the image (NHWC uint8, resized to the tile size), then its first
    `max_channels` maps (N, C, h, w), each stretched on its own and enlarged (nearest)."""
    count, channels, height, width = maps.shape
    shown = min(channels, max_channels)
    scale = tile_scale(height, width, min_tile)
    stretched = _stretch(maps[:, :shown].reshape(count * shown, height, width)).reshape(
        count, shown, height, width
    )
    tiles = []
    for i in range(count):
        picture = Image.fromarray(images[i]).resize((width * scale, height * scale), Image.BILINEAR)
        tiles.append(np.asarray(picture))
        tiles += [enlarge(tile, scale) for tile in stretched[i]]
    return tile_grid(tiles, columns=shown + 1)


def first_conv(module: nn.Module) -> nn.Conv2d | None:
    return next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)


class FeatureMapLogger(Callback):
    """Log the first conv layer's filters and the feature maps of sample images at `layers`.

    Args:
        layers: layer names (`named_modules()` names of the backbone, else of the module).
        num_images: sample images, one row each.
        max_channels: maps (columns) shown per image and layer.
        filters: also log the first convolution's filters (`features/filters`).
    """

    def __init__(
        self, layers: Sequence[str] = (), num_images: int = 4, max_channels: int = 16, filters: bool = True
    ) -> None:
        if num_images < 1 or max_channels < 1:
            raise InputError(
                f"num_images and max_channels must be positive, got {num_images} and {max_channels}"
            )
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.num_images, self.max_channels, self.filters = num_images, max_channels, filters
        self._images: Tensor | None = None
        self._warned: set[str] = set()

    # ---------------------------------------------------------------- layers
    def _resolve(self, pl_module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
        backbone = getattr(pl_module, "backbone", None)
        resolved = []
        for name in self.layers:
            if isinstance(backbone, nn.Module):
                try:
                    resolved.append((name, backbone.get_submodule(name)))
                    continue
                except AttributeError:
                    pass
            try:
                resolved.append((name, find_layer(pl_module, name, f"{type(pl_module).__name__}")))
            except InputError:
                if not isinstance(backbone, nn.Module):
                    raise
                raise InputError(
                    f"layer {name!r} is in neither the backbone nor {type(pl_module).__name__}: "
                    f"backbone {layer_names_hint(backbone)}"
                ) from None
        return resolved

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._resolve(pl_module)  # a misspelt layer fails before any work is done

    # ---------------------------------------------------------------- hooks
    def _keep(self, batch: Any) -> None:
        images = next((batch[key] for key in IMAGE_KEYS if isinstance(batch, dict) and key in batch), None)
        if isinstance(images, Tensor) and images.ndim == 4:
            self._images = images[: self.num_images].detach()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0 and not trainer.sanity_checking:
            self._keep(batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._images is not None and not trainer.sanity_checking:
            self.log_pictures(trainer, pl_module, self._images)
        self._images = None

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._keep(batch)
            if self._images is not None:
                self.log_pictures(trainer, pl_module, self._images)
            self._images = None

    # ---------------------------------------------------------------- pictures
    def log_pictures(self, trainer: pl.Trainer, pl_module: pl.LightningModule, images: Tensor) -> None:
        """Filters (`features/filters`) and maps at each layer (`features/<layer>`) for `images`."""
        if not trainer.loggers:
            return
        if self.filters:
            backbone = getattr(pl_module, "backbone", None)
            conv = first_conv(backbone if isinstance(backbone, nn.Module) else pl_module) or first_conv(
                pl_module
            )
            if conv is not None:
                log_image(trainer, "features/filters", filter_grid(conv.weight))
        if not self.layers:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad(), capture_outputs(self._resolve(pl_module)) as captured:
            pl_module(images)
        pl_module.train(was_training)
        datamodule = getattr(trainer, "datamodule", None)
        pictures = to_uint8_images(
            images, getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        )
        for name in self.layers:
            maps = captured.get(name)
            if maps is None or maps.ndim != 4:
                if name not in self._warned:
                    self._warned.add(name)
                    shape = "nothing" if maps is None else f"shape {list(maps.shape)}"
                    log.warning(
                        "FeatureMapLogger: layer %r gave %s, not (N, C, H, W) maps; not drawn", name, shape
                    )
                continue
            log_image(trainer, f"features/{name}", feature_map_grid(pictures, maps, self.max_channels))
