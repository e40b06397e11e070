"""BufferedUpdates: metrics updated in bulk give the figures of metrics updated batch by batch."""

from __future__ import annotations

import torch
from torchmetrics import AUROC, Accuracy, F1Score, MetricCollection

from vision_lightning.metrics.buffered import BufferedUpdates


def _metrics() -> MetricCollection:
    return MetricCollection(
        {
            "acc": Accuracy(task="multiclass", num_classes=6),
            "f1_macro": F1Score(task="multiclass", num_classes=6, average="macro"),
            "top3_acc": Accuracy(task="multiclass", num_classes=6, top_k=3),
            "auroc": AUROC(task="multiclass", num_classes=6),
        }
    )


def test_bulk_updates_give_the_per_batch_figures():
    torch.manual_seed(0)
    batches = [(torch.randn(16, 6), torch.randint(0, 6, (16,))) for _ in range(7)]
    direct, bulk = _metrics(), _metrics()
    for logits, target in batches:
        direct.update(logits.softmax(dim=1), target)

    sizes = []

    def update(logits, target):
        sizes.append(len(logits))
        bulk.update(logits.softmax(dim=1), target)

    buffered = BufferedUpdates(update, max_elements=40 * 6)  # 40 rows of 6 outputs
    for logits, target in batches:
        buffered.add(logits, target)
    assert sizes == [48, 48]  # flushed once 48 rows (>= 40) were held
    buffered.flush()
    buffered.flush()  # nothing left: no empty update
    assert sizes == [48, 48, 16]
    expected, got = direct.compute(), bulk.compute()
    assert set(got) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value)


def test_held_outputs_are_detached_and_clear_drops_them():
    seen = []
    buffered = BufferedUpdates(lambda outputs, target: seen.append(outputs))
    logits = torch.randn(4, 3, requires_grad=True) * 2
    buffered.add(logits, torch.tensor([0, 1, 2, 0]))
    buffered.clear()
    buffered.flush()
    assert seen == []
    buffered.add(logits, torch.tensor([0, 1, 2, 0]))
    buffered.flush()
    assert len(seen) == 1 and not seen[0].requires_grad
    torch.testing.assert_close(seen[0], logits.detach())
