"""KNNClassifierModule: k-nearest-neighbour evaluation of cached embeddings.

How good are frozen features without training anything? Each validation (or test) embedding takes
the classes of its k most similar training embeddings, each vote weighted by exp(similarity / T)
as in DINO's kNN evaluation (Caron et al. 2021, T = 0.07). Run it with `validate` or `test` on an
EmbeddingDataModule:

    python -m vision_lightning validate --config configs/features/cats_dogs_knn.yaml

The bank (every training embedding and its label) is read from the data module's training split at
the start of each validation or test run, in order and without augmentation.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import PlainHyperparameters

Metric = Literal["cosine", "euclidean"]
NOTHING_TO_FIT = (
    "KNNClassifierModule has nothing to train: run `validate` or `test` on an EmbeddingDataModule"
)


def similarities(bank: Tensor, queries: Tensor, metric: Metric) -> Tensor:
    """(Q, M) similarities of queries to bank rows: cosine similarity, or minus the euclidean
    distance (larger is nearer for both)."""
    if metric == "cosine":
        return F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).T
    return -torch.cdist(queries, bank)


def knn_predict(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    k: int,
    num_classes: int,
    metric: Metric = "cosine",
    temperature: float | None = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """(Q, num_classes) class scores of `queries` (Q, D) from their `k` nearest rows of `bank`
    (M, D) with class ids `bank_labels` (M,); rows sum to 1, argmax is the prediction.

    A neighbour's vote is exp(similarity / temperature) (see `similarities`), or 1 with
    `temperature=None` (majority vote; ties go to the lower class id). Queries are handled
    `chunk_size` at a time, so the similarity matrix stays (chunk_size, M).
    """
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"metric must be cosine or euclidean, got {metric!r}")
    if len(bank) == 0:
        raise InputError("the kNN bank is empty: the training split has no embeddings")
    if temperature is not None and temperature <= 0:
        raise InputError(f"temperature must be positive (or null for a majority vote), got {temperature}")
    k = min(k, len(bank))
    bank, queries = bank.float(), queries.float()
    scores = []
    for start in range(0, len(queries), chunk_size):
        similarity, index = similarities(bank, queries[start : start + chunk_size], metric).topk(k, dim=1)
        if temperature is None:
            weights = torch.ones_like(similarity)
        else:  # minus each row's best: the same vote after normalising, without overflow
            weights = ((similarity - similarity[:, :1]) / temperature).exp()
        votes = torch.zeros(len(index), num_classes, device=queries.device)
        votes.scatter_add_(1, bank_labels[index].long(), weights)
        scores.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(scores) if scores else queries.new_zeros(0, num_classes)


class KNNClassifierModule(PlainHyperparameters, pl.LightningModule):
    """k-NN classification of embeddings; logs `val/knn_acc` / `test/knn_acc` (and top-5 accuracy
    with more than 5 classes). Nothing to train: use `validate` or `test`.

    Args:
        num_classes / class_names: linked from the data module by the CLI.
        k: neighbours per query (DINO uses 20).
        metric: `cosine` similarity or `euclidean` distance.
        temperature: votes weigh exp(similarity / temperature); null counts each neighbour once.
    """

    def __init__(
        self,
        num_classes: int = 10,
        class_names: list[str] | None = None,
        k: int = 20,
        metric: Metric = "cosine",
        temperature: float | None = 0.07,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise InputError(f"num_classes must be at least 2, got {num_classes}")
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}")
        if metric not in ("cosine", "euclidean"):
            raise InputError(f"metric must be cosine or euclidean, got {metric!r}")
        if temperature is not None and temperature <= 0:
            raise InputError(f"temperature must be positive (or null for a majority vote), got {temperature}")
        self.save_hyperparameters()
        for stage in ("val", "test"):
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro"))
            top = MulticlassAccuracy(num_classes, top_k=5, average="micro") if num_classes > 5 else None
            setattr(self, f"{stage}_top5", top)
        self.bank: Tensor | None = None
        self.bank_labels: Tensor | None = None

    def configure_optimizers(self):
        raise InputError(NOTHING_TO_FIT)

    def training_step(self, batch: Any, batch_idx: int):
        raise InputError(NOTHING_TO_FIT)

    # ---------------------------------------------------------------- the bank
    def build_bank(self) -> None:
        """Every training embedding and label, in order, on this module's device."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            raise InputError("KNNClassifierModule reads its bank from a data module's training split")
        loader = datamodule.train_dataloader()
        ordered = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size or 256,
            shuffle=False,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
        )
        rows, labels = [], []
        for batch in ordered:
            embeddings = self._embeddings(batch)
            rows.append(embeddings.to(self.device, torch.float32))
            labels.append(batch["label"].to(self.device).long())
        self.bank, self.bank_labels = torch.cat(rows), torch.cat(labels)

    def _embeddings(self, batch: dict[str, Any]) -> Tensor:
        embeddings = batch["image"]
        if embeddings.ndim != 2:
            raise InputError(
                f"KNNClassifierModule classifies embeddings (N, D), got a batch of shape {list(embeddings.shape)}: "
                "use EmbeddingDataModule"
            )
        return embeddings

    def on_validation_start(self) -> None:
        self.build_bank()

    def on_test_start(self) -> None:
        self.build_bank()

    # ---------------------------------------------------------------- evaluation
    def forward(self, embeddings: Tensor) -> Tensor:
        """(N, num_classes) vote shares of `embeddings` against the bank."""
        if self.bank is None:
            raise InputError("the kNN bank is empty: run validate or test (or call build_bank) first")
        hp = self.hparams
        return knn_predict(
            self.bank, self.bank_labels, embeddings, hp.k, hp.num_classes, hp.metric, hp.temperature
        )

    def _step(self, batch: dict[str, Any], stage: str) -> None:
        scores = self(self._embeddings(batch).float())
        target = batch["label"].long()
        getattr(self, f"{stage}_acc").update(scores, target)
        top5 = getattr(self, f"{stage}_top5")
        if top5 is not None:
            top5.update(scores, target)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, stage: str) -> None:
        accuracy, top5 = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_top5")
        if accuracy.update_count:
            self.log(f"{stage}/knn_acc", accuracy.compute(), prog_bar=True, sync_dist=True)
            if top5 is not None:
                self.log(f"{stage}/knn_top5_acc", top5.compute(), sync_dist=True)
        accuracy.reset()
        if top5 is not None:
            top5.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
