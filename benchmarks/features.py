"""Seed 001's transfer-learning workflow on ../shared/data/cifar10-small, through the CLI.

1. train the configs/classification/cifar10_folder.yaml classifier (LeNet-5 + BN) for `--epochs`;
2. extract the embeddings of its backbone (84-d, the layer before its classifier) for the train,
   validation and test splits with FeatureExtractModule (`checkpoint:` the classifier's last.ckpt);
3. train a linear probe on the cached train embeddings (ClassifierModule, `backbone: identity`,
   EmbeddingDataModule) and test it;
4. evaluate the embeddings by kNN (KNNClassifierModule, `test`).

The probe and kNN should land near the classifier's own test accuracy: the same features, read back
from disk, with a new linear head or with neighbours instead of a head. Prints a table and JSON.

    python benchmarks/features.py --data-root ../shared/data [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from vision_lightning.cli import VisionCLI

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = ROOT / "configs/classification/cifar10_folder.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _cli(*args) -> VisionCLI:
    return VisionCLI(args=[str(a) for a in args])


def _metric(cli: VisionCLI, name: str) -> float:
    return float(cli.trainer.callback_metrics[name])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--probe-epochs", type=int, default=20)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--work-dir", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    images = Path(args.data_root) / "cifar10-small"
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vl-features-"))
    data = ["--data.init_args.source.init_args.root", images, "--data.init_args.cache_images", "true"]
    figures: dict[str, float] = {}

    start = time.perf_counter()
    run = work / "classifier"
    _cli("fit", "--config", CLASSIFIER, *data, *QUIET, "--trainer.max_epochs", args.epochs,
         "--trainer.default_root_dir", run, "--checkpoint.dirpath", run / "checkpoints")  # fmt: skip
    checkpoint = run / "checkpoints/last.ckpt"
    tested = _cli("test", "--config", CLASSIFIER, *data, *QUIET, "--trainer.logger", "false",
                  "--ckpt_path", checkpoint)  # fmt: skip
    figures["classifier_test_acc"] = _metric(tested, "test/acc")
    figures["classifier_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    cache = work / "embeddings"
    _cli("predict", *QUIET, "--trainer.logger", "false",
         "--model", "vision_lightning.FeatureExtractModule", "--model.checkpoint", checkpoint,
         "--data", "vision_lightning.ImageClassificationDataModule", "--data.source", "ImageFolder",
         "--data.source.root", images, "--data.val_split", "0.1", "--data.image_size", "32",
         "--data.mean", "[0.4914, 0.4822, 0.4465]", "--data.std", "[0.2470, 0.2435, 0.2616]",
         "--data.batch_size", "256", "--data.predict_splits", "[train, val, test]",
         "--prediction_writer.output_dir", cache)  # fmt: skip
    figures["extract_seconds"] = time.perf_counter() - start
    figures["embedding_dim"] = int(np.load(cache / "embeddings_train.npy", mmap_mode="r").shape[1])

    embeddings = ["--data", "vision_lightning.EmbeddingDataModule", "--data.root", cache,
                  "--data.test_split", "test", "--data.batch_size", "128"]  # fmt: skip
    start = time.perf_counter()
    probe = work / "probe"
    _cli("fit", *QUIET, *embeddings, "--model", "vision_lightning.ClassifierModule",
         "--model.backbone", "identity", "--model.log_images", "0", "--model.lr", "0.01",
         "--trainer.max_epochs", args.probe_epochs, "--trainer.default_root_dir", probe,
         "--checkpoint.dirpath", probe / "checkpoints")  # fmt: skip
    tested = _cli("test", *QUIET, *embeddings, "--model", "vision_lightning.ClassifierModule",
                  "--model.backbone", "identity", "--trainer.logger", "false",
                  "--ckpt_path", probe / "checkpoints/last.ckpt")  # fmt: skip
    figures["linear_probe_test_acc"] = _metric(tested, "test/acc")
    figures["linear_probe_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    knn = _cli("test", *QUIET, *embeddings, "--model", "vision_lightning.KNNClassifierModule",
               "--model.k", args.k, "--trainer.logger", "false")  # fmt: skip
    figures["knn_test_acc"] = _metric(knn, "test/knn_acc")
    figures["knn_seconds"] = time.perf_counter() - start

    print(f"\n{'step':<34}{'test accuracy':>14}{'seconds':>10}")
    for label, key in (
        (f"classifier, {args.epochs} epochs", "classifier"),
        (f"linear probe on the cache, {args.probe_epochs} ep.", "linear_probe"),
        (f"kNN (k={args.k}, cosine) on the cache", "knn"),
    ):
        print(f"{label:<34}{figures[key + '_test_acc']:>14.3f}{figures[key + '_seconds']:>10.1f}")
    print(f"{'extract train/val/test embeddings':<34}{'':>14}{figures['extract_seconds']:>10.1f}")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
