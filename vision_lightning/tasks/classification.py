"""ClassifierModule: image classification with any backbone of the factory and four label modes.

- `multiclass`: softmax over classes, cross entropy with label smoothing; accuracy, macro F1, and
  top-5 accuracy in validation and test.
- `binary`: one logit, BCE; accuracy, AUROC, F1 (seed 000 pneumothorax).
- `multilabel`: one logit per class, BCE; accuracy, macro F1, macro AUROC.
- `soft`: probability / one-hot rows, soft cross entropy (seed 000 plant pathology); accuracy,
  macro F1 and one-vs-rest AUROC against the most likely class.

Multiclass training also takes probability rows (N, num_classes): the mixed labels of
`vision_lightning.callbacks.BatchMixing` (MixUp / CutMix), trained with the same cross entropy and
label smoothing. A batch marked `"mixed": True` updates no training metrics (see `BatchMixing`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import ConfusionMatrix, MetricCollection
from torchmetrics.classification import (
    AUROC,
    Accuracy,
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    F1Score,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelF1Score,
)

from vision_lightning.metrics.buffered import BufferedUpdates
from vision_lightning.models.factory import Cut, backbone_data_config, create_backbone
from vision_lightning.models.heads import HeadName, HeadOptions, build_head, head_options
from vision_lightning.outputs.files import CsvSink
from vision_lightning.tasks.base import BaseTask
from vision_lightning.tasks.tta import averaged_logits, flips
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.precision import in_float32
from vision_lightning.utils.transforms import eval_transform
from vision_lightning.utils.visualize import (
    GREEN,
    RED,
    captioned_grid,
    confusion_matrix_image,
    to_uint8_images,
)

LabelMode = Literal["multiclass", "binary", "multilabel", "soft"]
IDENTITY = "identity"  # backbone name of a classifier whose inputs already are features


def _feature_size(backbone: nn.Module, in_channels: int) -> int:
    if hasattr(backbone, "num_features"):
        return int(backbone.num_features)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, in_channels, 224, 224))
    backbone.train(was_training)
    if features.ndim != 2:
        raise InputError(
            f"the backbone module returns {features.ndim}-D features; it must return pooled (N, C) features"
        )
    return features.shape[1]


def class_probabilities(logits: Tensor, label_mode: str) -> Tensor:
    """(N, num_classes) probabilities of logits; binary gives [1 - p, p] so every mode names every class."""
    if label_mode == "binary":
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.sigmoid(logits) if label_mode == "multilabel" else logits.softmax(dim=1)


class ClassifierNetwork(nn.Module):
    """The exported classifier: images -> (probabilities (N, num_classes) as `predict` writes them,
    logits (N, 1) binary, else (N, num_classes))."""

    def __init__(self, backbone: nn.Module, head: nn.Module, label_mode: str) -> None:
        super().__init__()
        self.backbone, self.head, self.label_mode = backbone, head, label_mode

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.head(self.backbone(images))
        return class_probabilities(logits, self.label_mode), logits


class ClassifierModule(BaseTask):
    """Image classifier = backbone (by name or module) + head.

    Args:
        backbone: a name from `vision_lightning.models.available_backbones()` (classic nets,
            torchvision, timm; `timm:` / `torchvision:` prefixes choose), a ready `nn.Module`
            returning pooled features (then `load_from_checkpoint` needs it passed again), or
            `identity`: the inputs already are features (a linear probe on cached embeddings
            from `EmbeddingDataModule`, with the heads, metrics and CSV predictions of images).
        num_classes / class_names: linked from the data module by the CLI.
        label_mode: multiclass, binary (one logit), multilabel or soft (label rows).
        head: `linear`, `mlp`, or `{kind: mlp, hidden: 512, dropout: [0.25, 0.5]}` (seed 000's
            BN-Dropout-Linear-ReLU-BN-Dropout-Linear head; see `HeadOptions`).
        cut: where a torchvision classifier is cut (see `create_backbone`).
        pretrained / weights: ImageNet weights by download, or a local state dict for the backbone.
        in_channels: 1 for grayscale input (linked from the data module's `channels`); by default
            the backbone's own (1 for the seeds' MNIST nets, 3 otherwise).
        num_features: the width of the features the head gets: required with `identity` (the CLI
            links it from EmbeddingDataModule); for a backbone module it spares the probe forward
            pass that measures it; for a named backbone, a check.
        label_smoothing: for multiclass and soft cross entropy.
        top_k: also report top-k accuracy (validation and test) when there are more than k classes.
        log_images: how many validation images to show in TensorBoard, titled true / predicted.
        optimizer / lr_scheduler: injected factories (`{class_path: torch.optim.SGD, init_args:
            {lr: 0.1, momentum: 0.9}}`; `vision_lightning.optim.OneCycleLR` / `WarmupCosineLR`
            span the run); the task builds the parameter groups they get.
        freeze_backbone: train the head only (seed 001's frozen VGG16 / MobileNetV2).
        compile / channels_last: run the network through `torch.compile` / in channels-last memory
            order (passed on to `BaseTask`; see `vision_lightning.tasks.acceleration`).
        tta: in `test` and `predict`, average the probabilities of each image and its horizontal
            flip (passed on to `BaseTask`; see `vision_lightning.tasks.tta`).
    """

    no_tta_reason = None

    def __init__(
        self,
        backbone: str | nn.Module = "resnet18",
        num_classes: int = 10,
        class_names: list[str] | None = None,
        label_mode: LabelMode = "multiclass",
        head: HeadName | HeadOptions = "linear",
        cut: Cut = "last",
        pretrained: bool = False,
        weights: str | None = None,
        in_channels: int | None = None,
        num_features: int | None = None,
        label_smoothing: float = 0.0,
        top_k: int = 5,
        log_images: int = 16,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_backbone: bool = False,
        **kwargs: Any,
    ) -> None:
        if label_mode not in ("multiclass", "binary", "multilabel", "soft"):
            raise InputError(f"label_mode must be multiclass, binary, multilabel or soft, got {label_mode!r}")
        if num_classes < 2:
            raise InputError(
                f"num_classes must be at least 2 (binary uses 2 classes and one logit), got {num_classes}"
            )
        if class_names is not None and len(class_names) != num_classes:
            raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if backbone == IDENTITY and num_features is None:
            raise InputError(
                "backbone identity needs num_features, the width of the input features "
                "(linked from EmbeddingDataModule by the CLI)"
            )
        if num_features is not None and num_features < 1:
            raise InputError(f"num_features must be positive, got {num_features}")
        super().__init__(optimizer, lr_scheduler, freeze_backbone, **kwargs)
        self.hold_module("backbone", backbone)
        self.head_options = head_options(head)
        self.save_hyperparameters()

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names or [str(i) for i in range(self.hparams.num_classes)])

    # ---------------------------------------------------------------- configure
    def configure_models(self) -> None:
        hp = self.hparams
        if self.given_modules.get("backbone") is not None:
            self.backbone = self.given_modules["backbone"]
            num_features = hp.num_features or _feature_size(self.backbone, hp.in_channels or 3)
        elif hp.backbone == IDENTITY:
            if hp.pretrained or hp.weights:
                raise InputError("backbone identity has no weights: leave out pretrained and weights")
            self.backbone, num_features = nn.Identity(), hp.num_features
        else:
            self.backbone, num_features = create_backbone(
                hp.backbone, hp.pretrained, hp.in_channels, hp.cut, hp.weights
            )
            if hp.num_features is not None and hp.num_features != num_features:
                raise InputError(
                    f"num_features is {hp.num_features} but backbone {hp.backbone!r} gives {num_features} features"
                )
        outputs = 1 if hp.label_mode == "binary" else hp.num_classes
        self.head = build_head(self.head_options, num_features, outputs)

    def configure_losses(self) -> None:
        mode, smoothing = self.hparams.label_mode, self.hparams.label_smoothing
        if mode in ("multiclass", "soft"):
            self.loss_fn = nn.CrossEntropyLoss(label_smoothing=smoothing)  # takes ids or probability rows
        else:
            self.loss_fn = nn.BCEWithLogitsLoss()

    def configure_metrics(self) -> None:
        mode, n = self.hparams.label_mode, self.hparams.num_classes
        if mode == "binary":
            metrics = {"acc": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()}
        elif mode == "multilabel":
            metrics = {
                "acc": MultilabelAccuracy(n),
                "f1_macro": MultilabelF1Score(n, average="macro"),
                "auroc": MultilabelAUROC(n, average="macro"),
            }
        else:
            metrics = {
                "acc": Accuracy(task="multiclass", num_classes=n),
                "f1_macro": F1Score(task="multiclass", num_classes=n, average="macro"),
            }
            if n > self.hparams.top_k:
                metrics[f"top{self.hparams.top_k}_acc"] = Accuracy(
                    task="multiclass", num_classes=n, top_k=self.hparams.top_k
                )
            if mode == "soft":
                metrics["auroc"] = AUROC(task="multiclass", num_classes=n, average="macro")
        collection = MetricCollection(metrics)
        # Top-k accuracy costs ten times accuracy and F1 together per image: validation and test only.
        training = {name: metric for name, metric in metrics.items() if not name.startswith("top")}
        self.train_metrics = MetricCollection(training).clone(prefix="train/")
        self._train_updates = BufferedUpdates(self._update_train_metrics)
        self.val_metrics = collection.clone(prefix="val/")
        self.test_metrics = collection.clone(prefix="test/")
        self.val_confusion = (
            ConfusionMatrix(task="multiclass", num_classes=n) if mode != "multilabel" else None
        )
        self._samples: dict[str, Tensor] = {}

    @property
    def data_config(self) -> dict[str, Any] | None:
        backbone = self.hparams.get("backbone")
        return backbone_data_config(backbone) if isinstance(backbone, str) and backbone != IDENTITY else None

    # ---------------------------------------------------------------- forward and targets
    def forward(self, images: Tensor) -> Tensor:
        """Logits: (N, 1) for binary, (N, num_classes) otherwise."""
        return self.head(self.backbone(images))

    def augmented_forward(self, images: Tensor) -> Tensor:
        """Logits whose probabilities are the mean of those of the images and their horizontal flips."""
        if images.ndim != 4:
            raise InputError(
                f"tta flips images, but this classifier's inputs are {images.ndim}-D (cached features?): "
                "set tta: false"
            )
        activation = "sigmoid" if self.hparams.label_mode in ("binary", "multilabel") else "softmax"
        return averaged_logits(self, images, flips(spatial_outputs=False), activation)

    def probabilities(self, logits: Tensor) -> Tensor:
        """(N, num_classes) probabilities; binary gives [1 - p, p] so every mode names every class."""
        return class_probabilities(logits, self.hparams.label_mode)

    @in_float32
    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        mode = self.hparams.label_mode
        if mode == "binary":
            return self.loss_fn(logits[:, 0], target.float())
        if mode == "multiclass" and target.ndim == 1:
            return self.loss_fn(logits, target.long())
        return self.loss_fn(logits, target.float())  # rows: soft labels, or mixed multiclass ones

    @in_float32
    def _metric_inputs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        mode = self.hparams.label_mode
        if mode == "binary":
            return torch.sigmoid(logits[:, 0]), target.long()
        if mode == "multilabel":
            return torch.sigmoid(logits), target.long()
        if mode == "soft":  # its AUROC needs probabilities
            return logits.softmax(dim=1), target.argmax(dim=1)
        if target.ndim == 2:  # multiclass probability rows: the most likely class
            return logits, target.argmax(dim=1)
        return logits, target.long()  # accuracy, F1 and top-k rank logits as they rank probabilities

    def _check_targets(self, target: Tensor) -> None:
        mode, n = self.hparams.label_mode, self.hparams.num_classes
        if mode == "multiclass" and target.ndim == 2 and target.is_floating_point():
            mode = "soft"  # probability rows (mixed by BatchMixing): checked as soft labels
        if mode in ("multiclass", "binary") and target.numel():
            low, high = torch.stack(torch.aminmax(target)).tolist()  # one reduction, one read back
            if low < 0 or high >= n:
                bad = target[(target < 0) | (target >= n)].unique().tolist()[:5]
                raise InputError(f"labels must be class ids 0..{n - 1} (num_classes={n}), got {bad}")
        if mode in ("multilabel", "soft") and (target.ndim != 2 or target.shape[1] != n):
            raise InputError(
                f"label_mode {mode} needs label rows of {n} values, got shape {list(target.shape)}"
            )

    # ---------------------------------------------------------------- steps
    def _shared_step(self, batch: Any, stage: str) -> tuple[dict[str, Any], Tensor, Tensor]:
        """(batch as a dict, loss, logits); logs the loss."""
        batch = self.unpack(batch, "label")
        images, target = batch["image"], batch["label"]
        self._check_targets(target)
        logits = self.evaluation_forward(images) if stage == "test" else self(images)
        loss = self._loss(logits, target)
        self.log_loss(stage, loss, len(images))
        return batch, loss, logits

    def _evaluation_step(self, batch: Any, stage: str) -> tuple[dict[str, Any], Tensor, Tensor, Tensor]:
        """(batch as a dict, logits, metric predictions, metric targets); updates the stage's metrics."""
        batch, _, logits = self._shared_step(batch, stage)
        predictions, target = self._metric_inputs(logits.detach(), batch["label"])
        getattr(self, f"{stage}_metrics").update(predictions, target)
        return batch, logits, predictions, target

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch, loss, logits = self._shared_step(batch, "train")
        if not batch.get("mixed"):  # a mix has no one true class (callbacks/batch_mixing.py)
            self._train_updates.add(logits, batch["label"])  # applied in bulk: metrics/buffered.py
        return loss

    def _update_train_metrics(self, logits: Tensor, target: Tensor) -> None:
        self.train_metrics.update(*self._metric_inputs(logits, target))

    def on_fit_start(self) -> None:
        self._train_updates.clear()  # left over from an interrupted run
        super().on_fit_start()

    def on_train_epoch_end(self) -> None:
        self._train_updates.flush()
        super().on_train_epoch_end()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        batch, logits, predictions, target = self._evaluation_step(batch, "val")
        if self.val_confusion is not None:  # binary predictions are P(positive), the others rows
            classes = predictions.argmax(dim=1) if predictions.ndim == 2 else (predictions > 0.5).long()
            self.val_confusion.update(classes, target)
        # Only images are drawn: cached embeddings (N, D) have nothing to show.
        if (
            batch_idx == 0
            and self.hparams.log_images
            and batch["image"].ndim == 4
            and not self.trainer.sanity_checking
        ):
            n = self.hparams.log_images
            self._samples = {
                "image": batch["image"][:n].cpu(),
                "label": batch["label"][:n].cpu(),
                "logits": logits[:n].cpu(),
            }

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`{"path": names, "probs": (N, num_classes)}`; names by index when the batch has no paths."""
        batch = self.unpack(batch, "label")
        probs = self.probabilities(self.evaluation_forward(batch["image"]).float()).cpu()
        return {"path": self.batch_names(batch, len(probs), batch_idx), "probs": probs}

    def predict_batches(self, images: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        transform = eval_transform(self.preprocessing)
        return [{"image": torch.stack([transform(image=image)["image"] for image in images]), "path": paths}]

    def prediction_results(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """`{"path", "prediction": class name (multilabel: names joined by ';'), "probs": {name: p}}`."""
        return [
            {
                "path": path,
                "prediction": self._predicted_name(probs),
                "probs": dict(zip(self.class_names, probs.tolist())),
            }
            for path, probs in zip(outputs["path"], outputs["probs"])
        ]

    def _predicted_name(self, probs: Tensor) -> str:
        names = self.class_names
        if self.hparams.label_mode == "multilabel":
            return ";".join(names[i] for i in torch.nonzero(probs > 0.5).flatten().tolist())
        return names[int(probs.argmax())]

    # ---------------------------------------------------------------- TensorBoard pictures
    def _label_text(self, values: Tensor) -> str:
        names, mode = self.class_names, self.hparams.label_mode
        if mode == "multilabel":
            return "+".join(names[i] for i in torch.nonzero(values > 0.5).flatten().tolist()) or "-"
        if mode == "soft":
            return names[int(values.argmax())]
        return names[int(values)]

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")
        if self.trainer.sanity_checking:
            self._samples = {}
            if self.val_confusion is not None:
                self.val_confusion.reset()
            return
        if self._samples:
            samples, self._samples = self._samples, {}
            probs = self.probabilities(samples["logits"])
            predicted = probs > 0.5 if self.hparams.label_mode == "multilabel" else probs.argmax(dim=1)
            truth = [self._label_text(t) for t in samples["label"]]
            guess = [self._label_text(p) for p in predicted]
            datamodule = getattr(self.trainer, "datamodule", None)
            images = to_uint8_images(
                samples["image"], getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
            )
            captions = [f"true: {t}\npred: {p}" for t, p in zip(truth, guess)]
            colours = [GREEN if t == p else RED for t, p in zip(truth, guess)]
            log_image(self.trainer, "val/samples", captioned_grid(images, captions, colours))
        if self.val_confusion is not None:
            matrix = self.val_confusion.compute().cpu().numpy()
            self.val_confusion.reset()
            log_image(self.trainer, "val/confusion_matrix", confusion_matrix_image(matrix, self.class_names))

    # ---------------------------------------------------------------- export
    export_outputs = ("probabilities", "logits")

    def export_network(self) -> nn.Module:
        """`ClassifierNetwork`: probabilities and logits of images (see `vision_lightning.export`)."""
        if self.hparams.get("backbone") == IDENTITY:
            raise InputError(
                "a ClassifierModule with backbone identity takes cached embeddings, not images: export "
                "the FeatureExtractModule that computed the embeddings instead"
            )
        return ClassifierNetwork(self.backbone, self.head, self.hparams.label_mode)

    # ---------------------------------------------------------------- predict output
    def prediction_sink(self, output_dir: Path, suffix: str = "") -> CsvSink:
        """`predictions.csv`: path, predicted class name (multilabel: names joined by ';'), one
        probability column per class."""
        names = self.class_names
        columns = [n if n not in ("path", "prediction") else f"prob_{n}" for n in names]

        def rows(outputs: dict[str, Any]):
            for path, probs in zip(outputs["path"], outputs["probs"]):
                yield [[path, self._predicted_name(probs), *(f"{p:.6f}" for p in probs.tolist())]]

        return CsvSink(output_dir / f"predictions{suffix}.csv", ["path", "prediction", *columns], rows)
