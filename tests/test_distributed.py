"""Several processes through the CLI, as users launch them: DDP on 2 CPU processes (gloo), and two
processes started the way a multi-node job starts them (environment variables, no spawning).

- Every epoch figure is reduced over processes: both ranks log the same `val/loss`, equal to one
  process's on the same data, so checkpoint selection and plateau schedules see the whole set.
- `predict` under DDP writes one complete, merged set of outputs (CSV, masks, embeddings), equal
  to one process's, with nothing duplicated or lost.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.distributed_helpers import fresh_process_environment

ROOT = Path(__file__).resolve().parents[1]
RECORD = "tests.distributed_helpers.RecordMetrics"
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
SINGLE = ["--trainer.devices", "1", "--trainer.accelerator", "cpu"]


def _environment(**extra: str) -> dict[str, str]:
    return fresh_process_environment(OMP_NUM_THREADS="1", **extra)


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m vision_lightning ARGS` in a new process (Lightning starts the second rank itself)."""
    command = [sys.executable, "-m", "vision_lightning", *map(str, args)]
    result = subprocess.run(
        command, cwd=cwd, env=env or _environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _records(folder: Path, stage: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{stage}.rank*.json"))]


def _classification(run: Path) -> list[str]:
    """The classification quickstart made small: 76 synthetic images give 60 training, 16
    validation (8 per process: no padding) and 19 test images (10 and 9 per process)."""
    return [
        "--config", ROOT / "configs/quickstart/classification.yaml",
        "--data.init_args.source.init_args.samples", "76",
        "--data.init_args.batch_size", "4",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "3",
        "--trainer.default_root_dir", run,
        "--checkpoint.dirpath", run / "checkpoints",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory) -> Path:
    """One 2-process fit of the classification quickstart; its run folder."""
    run = tmp_path_factory.mktemp("ddp_fit")
    _cli("fit", *_classification(run), *DDP, f"--trainer.callbacks+={RECORD}",
         "--trainer.callbacks.out_dir", run / "records", cwd=run)  # fmt: skip
    return run


def test_ddp_epoch_figures_are_global_and_match_one_process(ddp_fit: Path, tmp_path: Path):
    ranks = _records(ddp_fit / "records", "fit")
    assert [r["world_size"] for r in ranks] == [2, 2]
    first, second = (r["metrics"] for r in ranks)
    for key in ("val/loss", "val/acc", "train/loss_epoch", "train/acc"):
        assert first[key] == pytest.approx(second[key], abs=1e-6), key
    # The best checkpoint was chosen by that global figure, on both ranks alike.
    assert len(list((ddp_fit / "checkpoints").glob("epoch000-val_loss*.ckpt"))) == 1

    # `validate` of the trained weights: 2 processes, then 1, on the same 16 images.
    checkpoint = ddp_fit / "checkpoints" / "last.ckpt"
    common = [*_classification(tmp_path), "--ckpt_path", checkpoint, "--trainer.logger", "false"]
    _cli("validate", *common, *DDP, f"--trainer.callbacks+={RECORD}",
         "--trainer.callbacks.out_dir", tmp_path / "ddp", cwd=tmp_path)  # fmt: skip
    run_cli("validate", *common, *SINGLE, f"--trainer.callbacks+={RECORD}",
            "--trainer.callbacks.out_dir", tmp_path / "one")  # fmt: skip
    ddp, (one,) = _records(tmp_path / "ddp", "validate"), _records(tmp_path / "one", "validate")
    assert len(ddp) == 2
    for key in ("val/loss", "val/acc", "val/f1_macro"):
        values = [r["metrics"][key] for r in ddp]
        assert values[0] == pytest.approx(values[1], abs=1e-6), key
        assert values[0] == pytest.approx(one["metrics"][key], abs=1e-5), key


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_ddp_predict_writes_one_merged_csv(ddp_fit: Path, tmp_path: Path):
    checkpoint = ddp_fit / "checkpoints" / "last.ckpt"
    common = [*_classification(tmp_path), "--ckpt_path", checkpoint, "--trainer.logger", "false"]
    _cli("predict", *common, *DDP, "--prediction_writer.output_dir", tmp_path / "ddp", cwd=tmp_path)
    run_cli("predict", *common, *SINGLE, "--prediction_writer.output_dir", tmp_path / "one")
    # parts merged away; the run's record lists the merged file and every item once
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["prediction_run.json", "predictions.csv"]
    record = json.loads((tmp_path / "ddp/prediction_run.json").read_text())
    assert record["files"] == [{"path": "predictions.csv", "rows": 19}] and record["items_predicted"] == 19
    merged, single = _rows(tmp_path / "ddp/predictions.csv"), _rows(tmp_path / "one/predictions.csv")
    assert merged[0] == single[0] and "_index" not in merged[0]
    assert len(merged) == 1 + 19  # every test image once
    assert [row[0] for row in merged] == [row[0] for row in single]  # the data set's order
    assert [row[1] for row in merged] == [row[1] for row in single]
    np.testing.assert_allclose(
        np.array([row[2:] for row in merged[1:]], float),
        np.array([row[2:] for row in single[1:]], float),
        atol=1e-5,
    )


def test_ddp_predict_merges_embeddings(ddp_fit: Path, tmp_path: Path):
    config = tmp_path / "features.yaml"
    config.write_text(
        "seed_everything: 0\nmodel:\n  class_path: vision_lightning.FeatureExtractModule\n"
        "  init_args: {backbone: cifar_lenet, in_channels: 3}\n"
        "data:\n  class_path: vision_lightning.ImageClassificationDataModule\n  init_args:\n"
        "    source: {class_path: vision_lightning.data.classification_sources.SyntheticShapes, init_args: {samples: 76}}\n"
        "    image_size: 32\n    batch_size: 4\n    predict_splits: [val, test]\n"
    )
    common = ["--config", config, "--trainer.logger", "false"]
    _cli("predict", *common, *DDP, "--prediction_writer.output_dir", tmp_path / "ddp", cwd=tmp_path)
    run_cli("predict", *common, *SINGLE, "--prediction_writer.output_dir", tmp_path / "one")
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == names
    for split, count in (("val", 16), ("test", 19)):
        merged = np.load(tmp_path / f"ddp/embeddings_{split}.npy")
        single = np.load(tmp_path / f"one/embeddings_{split}.npy")
        assert merged.shape == single.shape and len(merged) == count
        np.testing.assert_allclose(merged, single, atol=1e-5)
        assert _rows(tmp_path / f"ddp/embeddings_{split}.csv") == _rows(
            tmp_path / f"one/embeddings_{split}.csv"
        )
        meta = json.loads((tmp_path / f"ddp/embeddings_{split}.json").read_text())
        assert meta["rows"] == count and meta["index"] == f"embeddings_{split}.csv"


def test_ddp_predict_writes_each_mask_once(tmp_path: Path):
    """Segmentation: one PNG per image under names that do not depend on the process, and one RLE CSV."""
    common = [
        "--config", ROOT / "configs/quickstart/segmentation.yaml",
        "--data.init_args.source.init_args.samples", "28",
        "--data.init_args.batch_size", "2",
        "--model.init_args.rle", "carvana",
        "--trainer.logger", "false",
    ]  # fmt: skip
    _cli("predict", *common, *DDP, "--prediction_writer.output_dir", tmp_path / "ddp", cwd=tmp_path)
    run_cli("predict", *common, *SINGLE, "--prediction_writer.output_dir", tmp_path / "one")
    masks = sorted(p.name for p in (tmp_path / "one/masks").iterdir())
    assert len(masks) == 7 and sorted(p.name for p in (tmp_path / "ddp/masks").iterdir()) == masks
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "masks",
        "masks.csv",
        "prediction_run.json",
    ]
    record = json.loads((tmp_path / "ddp/prediction_run.json").read_text())
    assert sorted(entry["path"] for entry in record["files"]) == ["masks.csv", *(f"masks/{m}" for m in masks)]
    assert record["items_predicted"] == 7
    merged, single = _rows(tmp_path / "ddp/masks.csv"), _rows(tmp_path / "one/masks.csv")
    assert [row[0] for row in merged] == [row[0] for row in single] and len(merged) == 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_started_by_environment_variables(tmp_path: Path):
    """What torchrun or SLURM do on each node: start one process with MASTER_ADDR, MASTER_PORT,
    WORLD_SIZE, NODE_RANK and LOCAL_RANK set; Lightning (`num_nodes: 2`) joins them."""
    port = str(_free_port())
    args = [
        "fit", *_classification(tmp_path),
        "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.num_nodes", "2",
        f"--trainer.callbacks+={RECORD}", "--trainer.callbacks.out_dir", tmp_path / "records",
    ]  # fmt: skip
    command = [sys.executable, "-m", "vision_lightning", *map(str, args)]
    nodes = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=_environment(
                MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", NODE_RANK=str(rank), LOCAL_RANK="0"
            ),  # fmt: skip
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-4000:]
    ranks = _records(tmp_path / "records", "fit")
    assert [(r["world_size"], r["node_rank"]) for r in ranks] == [(2, 0), (2, 1)]
    assert ranks[0]["metrics"]["val/loss"] == pytest.approx(ranks[1]["metrics"]["val/loss"], abs=1e-6)
