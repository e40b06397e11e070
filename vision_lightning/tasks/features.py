"""FeatureExtractModule: a frozen backbone that turns images into embedding vectors.

Seed 001's transfer learning starts here: VGG16's ImageNet features computed once for every image,
cached, then a linear classifier trained on the cache (`EmbeddingDataModule`) and a k-nearest-
neighbour evaluation of the same vectors (`KNNClassifierModule`). `predict` writes the vectors with
`PredictionWriter` as `.npy` files plus an index CSV, streamed to disk batch by batch. From Python,
call `trainer.predict(..., return_predictions=False)` so that Lightning does not also keep every
batch's output in memory (the CLI makes that its default).

Layers are named as `backbone.named_modules()` names them; `output` is the backbone's own output
(pooled features for classifiers, the deepest map of a segmentation encoder). Maps are pooled to
vectors: (N, C, H, W) by adaptive pooling to `pool_size` x `pool_size` then flattened, (N, L, C)
token sequences over their tokens, (N, D) kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch.nn.functional as F
from torch import Tensor, nn

from vision_lightning.models.factory import Cut, backbone_data_config, create_backbone
from vision_lightning.models.layers import as_tensor_output, capture_outputs, find_layer
from vision_lightning.outputs.embeddings import EmbeddingSink
from vision_lightning.outputs.files import BatchNames
from vision_lightning.tasks.acceleration import Accelerated, CompileOptions
from vision_lightning.tasks.base import BaseTask
from vision_lightning.tasks.loading import load_task_checkpoint
from vision_lightning.utils.checkpoints import guard_checkpoint_loading
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import PlainHyperparameters
from vision_lightning.utils.weights import load_weights

Pool = Literal["avg", "max", "avgmax", "flatten"]
OUTPUT = "output"
NOTHING_TO_FIT = "FeatureExtractModule is frozen and has nothing to fit: run `predict` to write embeddings"


def pool_features(x: Tensor, pool: Pool = "avg", pool_size: int = 1) -> Tensor:
    """(N, D) vectors from a layer's output.

    - (N, C, H, W) maps: `avg` / `max` adaptive pooling to `pool_size` x `pool_size` then
      flattened (C * pool_size**2 values); `avgmax` their mean (timm's `avgmax`); `flatten` the whole
      map (C * H * W, seed 001's 25,088 values of VGG16's last 512 x 7 x 7 map);
    - (N, L, C) tokens (vision transformers): mean, max or both over the L tokens; `flatten` keeps all;
    - (N, D) as given; anything else flattened.
    """
    if x.ndim == 4 and pool != "flatten":
        avg = F.adaptive_avg_pool2d(x, pool_size).flatten(1) if pool != "max" else None
        top = F.adaptive_max_pool2d(x, pool_size).flatten(1) if pool != "avg" else None
    elif x.ndim == 3 and pool != "flatten":
        avg = x.mean(dim=1) if pool != "max" else None
        top = x.amax(dim=1) if pool != "avg" else None
    else:
        return x.flatten(1)
    if avg is None:
        return top
    return avg if top is None else 0.5 * (avg + top)


class EmbeddingNetwork(nn.Module):
    """A backbone's embeddings: `{layer: (N, D) float32}` of images for each of `layers` (see
    FeatureExtractModule), captured in one forward pass; what FeatureExtractModule runs and exports."""

    def __init__(
        self, backbone: nn.Module, layers: Sequence[str], pool: Pool, pool_size: int, normalize: bool
    ) -> None:
        super().__init__()
        self.backbone, self.layers = backbone, list(layers)
        self.pool, self.pool_size, self.normalize = pool, pool_size, normalize

    def _pool(self, x: Tensor) -> Tensor:
        return pool_features(x, self.pool, self.pool_size)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        hooked = [(name, self.backbone.get_submodule(name)) for name in self.layers if name != OUTPUT]
        with capture_outputs(hooked, self._pool) as captured:
            output = self.backbone(images)
        features = {}
        for name in self.layers:
            if name == OUTPUT:
                tensor = as_tensor_output(output)
                if tensor is None:
                    raise InputError(f"the backbone returns {type(output).__name__}, not a tensor")
                vectors = self._pool(tensor)
            elif name in captured:
                vectors = captured[name]
            else:
                raise InputError(f"layer {name!r} did not run in the backbone's forward pass")
            vectors = vectors.float()
            features[name] = F.normalize(vectors, dim=1) if self.normalize else vectors
        return features


class FeatureExtractModule(Accelerated, PlainHyperparameters, pl.LightningModule):
    """A frozen embedder: `forward(images)` gives `{layer: (N, D) float32}` for every requested layer.

    Args:
        backbone: a factory name (`resnet18`, `vgg16`, `timm:convnext_tiny`, a classic net) or a
            ready `nn.Module` (not saved as a hyperparameter: pass it again to `load_from_checkpoint`).
        pretrained / weights: ImageNet weights by download, or a local state dict loaded with the
            factory's loader (a torchvision/timm file, or a checkpoint's `backbone.` part).
        checkpoint: a ClassifierModule, SegmentationModule or DetectionModule checkpoint trained
            here; its backbone (the smp encoder for segmentation, the body under the feature pyramid
            for detection, whose `output` is its deepest map) is used, and `backbone`, `in_channels`
            and `cut` are not (they come from the checkpoint). A detection checkpoint also loads as
            `weights` into a backbone of the same name (its `backbone.` part).
        in_channels / cut: as for ClassifierModule (`cut: classifier` makes VGG16 give 25,088 values).
        layers: `output` (the backbone's own pooled output) and/or `named_modules()` names of the
            backbone (`layer3`, `features.22`), captured in one forward pass.
        pool / pool_size: how maps become vectors (see `pool_features`); `output` of a classifier
            backbone is already a vector.
        normalize: L2-normalise each row (cosine-ready embeddings).
        compile / channels_last: run the backbone through `torch.compile` / in channels-last memory
            order (see `vision_lightning.tasks.acceleration`).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,
        checkpoint: str | None = None,
        in_channels: int | None = None,
        cut: Cut = "last",
        layers: Sequence[str] = (OUTPUT,),
        pool: Pool = "avg",
        pool_size: int = 1,
        normalize: bool = False,
        compile: bool | CompileOptions = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.set_acceleration(compile, channels_last)
        module = backbone if isinstance(backbone, nn.Module) else None
        self._batch_names = BatchNames()
        self.save_hyperparameters()  # a ready module is not saved (pass it again to load_from_checkpoint)
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise InputError(f"layers must name one or more distinct layers, got {self.layers}")
        if pool not in ("avg", "max", "avgmax", "flatten"):
            raise InputError(f"pool must be avg, max, avgmax or flatten, got {pool!r}")
        if pool_size < 1:
            raise InputError(f"pool_size must be at least 1, got {pool_size}")
        self.backbone = self._build_backbone(module)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        for name in self.layers:
            if name != OUTPUT:
                find_layer(self.backbone, name)
        self.accelerate()

    def networks(self) -> list[nn.Module]:
        return [self.backbone]

    def setup(self, stage: str) -> None:
        self.compile_networks_instead()
        if self._trainer is not None:
            guard_checkpoint_loading(self._trainer)

    def _build_backbone(self, module: nn.Module | None) -> nn.Module:
        hp = self.hparams
        if hp.checkpoint:
            if module is not None or hp.pretrained or hp.weights:
                raise InputError(
                    "checkpoint gives the backbone and its weights: leave out pretrained, weights "
                    "and a backbone module"
                )
            return load_task_checkpoint(hp.checkpoint).backbone
        if module is not None:
            if hp.pretrained:
                raise InputError(
                    "pretrained downloads weights for a backbone name; a backbone module has its own"
                )
            if hp.weights:
                load_weights(module, hp.weights, strict=True, prefix="backbone.")
            return module
        return create_backbone(hp.backbone, hp.pretrained, hp.in_channels, hp.cut, hp.weights)[0]

    def train(self, mode: bool = True) -> FeatureExtractModule:
        """Always in eval mode: BatchNorm statistics and dropout stay those of inference."""
        return super().train(False)

    def configure_optimizers(self):
        raise InputError(NOTHING_TO_FIT)

    def training_step(self, batch: Any, batch_idx: int):
        raise InputError(NOTHING_TO_FIT)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """`{layer: (N, D) float32}` for `images` (N, C, H, W), in the order of `layers`."""
        return self.export_network()(images)

    # ---------------------------------------------------------------- export
    @property
    def export_outputs(self) -> tuple[str, ...]:
        """One output per layer, named as the layer (`output`, `layer3`)."""
        return tuple(self.layers)

    #: the backbone takes images normalised with mean/std
    export_normalized_inputs = True

    @property
    def export_fixed_size(self) -> str | None:
        """`pool: flatten` gives C * H * W values: another image size would give vectors of another width."""
        if self.hparams.pool == "flatten":
            return "pool flatten gives vectors whose width depends on the image size"
        return None

    @property
    def data_config(self) -> dict[str, Any] | None:
        """The backbone's pretrained mean/std and input size (a timm backbone's config), for export."""
        backbone = self.hparams.get("backbone")
        named = isinstance(backbone, str) and not self.hparams.get("checkpoint")
        return backbone_data_config(backbone) if named else None

    def export_network(self) -> nn.Module:
        """`EmbeddingNetwork`: the embeddings of `layers`, as `forward` gives them."""
        hp = self.hparams
        return EmbeddingNetwork(self.backbone, self.layers, hp.pool, hp.pool_size, hp.normalize)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`{"path", "label" (when the batch has labels), "features": {layer: (N, D) on the CPU}}`;
        `(image, label)` tuples work too, and without paths rows are named by index."""
        batch = BaseTask.unpack(batch, "label")
        features = self(batch["image"])
        output: dict[str, Any] = {
            "path": self._batch_names(batch, len(batch["image"]), batch_idx, self._trainer),
            "features": {name: value.cpu() for name, value in features.items()},
        }
        if "label" in batch:
            output["label"] = batch["label"].cpu()
        return output

    def prediction_sink(self, output_dir: Path, suffix: str = "") -> EmbeddingSink:
        """`embeddings{suffix}.npy` (or one `embeddings_<layer>{suffix}.npy` per layer) and the
        index `embeddings{suffix}.csv`; labels named with the data module's `class_names`."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        class_names = getattr(datamodule, "class_names", None)
        return EmbeddingSink(output_dir, suffix, self.layers, class_names)
