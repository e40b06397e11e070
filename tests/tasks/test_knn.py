"""k-nearest-neighbour evaluation: `knn_predict` against a brute-force reference, and
KNNClassifierModule validating and testing an embedding cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import cpu_trainer
from tests.embedding_cache import write_embedding_cache
from vision_lightning import EmbeddingDataModule, KNNClassifierModule
from vision_lightning.tasks.knn import knn_predict
from vision_lightning.utils.errors import InputError


def _reference(bank, labels, queries, k, num_classes, metric, temperature):
    """One query at a time, in float64 numpy: sort every bank row by similarity, vote."""
    bank, queries = bank.double().numpy(), queries.double().numpy()
    scores = np.zeros((len(queries), num_classes))
    for q, query in enumerate(queries):
        if metric == "cosine":
            similarity = bank @ query / (np.linalg.norm(bank, axis=1) * np.linalg.norm(query))
        else:
            similarity = -np.sqrt(((bank - query) ** 2).sum(axis=1))
        nearest = np.argsort(-similarity, kind="stable")[:k]
        for i in nearest:
            weight = 1.0 if temperature is None else np.exp(similarity[i] / temperature)
            scores[q, labels[i]] += weight
        scores[q] /= scores[q].sum()
    return scores


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("temperature", [0.07, 0.5, None])
def test_knn_predict_matches_brute_force(metric, temperature):
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(60, 5, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    queries = torch.randn(17, 5, generator=generator)
    scale = 1.0 if metric == "cosine" else 0.05  # keep exp(-distance / T) within float64 for the reference
    scores = knn_predict(bank * scale, labels, queries * scale, 7, 4, metric, temperature, chunk_size=5)
    expected = _reference(bank * scale, labels, queries * scale, 7, 4, metric, temperature)
    assert scores.shape == (17, 4)
    assert np.allclose(scores.numpy(), expected, atol=1e-5)
    assert torch.allclose(scores.sum(dim=1), torch.ones(17))


def test_knn_predict_edge_cases():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    labels = torch.tensor([0, 1, 1])
    # k larger than the bank uses the whole bank; a tie in a majority vote goes to the lower id
    scores = knn_predict(bank, labels, torch.tensor([[1.0, 0.0]]), 10, 2, temperature=None)
    assert torch.allclose(scores, torch.tensor([[1 / 3, 2 / 3]]))
    assert knn_predict(bank[:2], labels[:2], torch.tensor([[1.0, 1.0]]), 2, 2, temperature=None).argmax() == 0
    with pytest.raises(InputError, match="metric must be cosine or euclidean"):
        knn_predict(bank, labels, bank, 1, 2, metric="manhattan")
    with pytest.raises(InputError, match="bank is empty"):
        knn_predict(bank[:0], labels[:0], bank, 1, 2)


def test_knn_module_validates_and_tests_a_cache(tmp_path: Path):
    write_embedding_cache(tmp_path, splits=("train", "val", "test"), num_classes=3, class_names=None, rows=30)
    data = EmbeddingDataModule(str(tmp_path), test_split="test", batch_size=8)
    model = KNNClassifierModule(num_classes=data.num_classes, k=5)
    assert cpu_trainer().validate(model, data, verbose=False) == [{"val/knn_acc": 1.0}]
    assert model.bank.shape == (30, 8) and model.bank_labels.tolist() == [i % 3 for i in range(30)]
    assert cpu_trainer().test(model, data, verbose=False) == [{"test/knn_acc": 1.0}]


def test_knn_module_reports_top5_and_chance_on_noise(tmp_path: Path):
    write_embedding_cache(tmp_path, num_classes=8, class_names=None, rows=40, spread=100.0)  # noise
    data = EmbeddingDataModule(str(tmp_path), batch_size=16)
    metrics = cpu_trainer().validate(KNNClassifierModule(num_classes=8, k=5), data, verbose=False)[0]
    assert set(metrics) == {"val/knn_acc", "val/knn_top5_acc"}
    assert metrics["val/knn_acc"] < 0.5 and metrics["val/knn_top5_acc"] >= metrics["val/knn_acc"]


def test_knn_module_has_nothing_to_fit(tmp_path: Path):
    write_embedding_cache(tmp_path)
    data = EmbeddingDataModule(str(tmp_path))
    with pytest.raises(InputError, match="nothing to train: run `validate` or `test`"):
        cpu_trainer().fit(KNNClassifierModule(num_classes=2), data)
    with pytest.raises(InputError, match="k must be at least 1"):
        KNNClassifierModule(k=0)
