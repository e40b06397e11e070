"""`python -m vision_lightning {fit,validate,test,predict,lr_find} --config FILE`: LightningCLI with defaults.

- model and data in subclass mode (`class_path: vision_lightning.ClassifierModule`);
- data-defined arguments linked into the model, so nobody writes them twice: `num_classes`,
  `class_names`, `label_mode`, `mode`, `ignore_index`, `scale`, `style_image`, `style_size`, `num_features`, and `channels` -> `in_channels` (Lightning #9473, #17275);
  a link whose target the chosen model lacks is skipped;
- always on: checkpointing (`--checkpoint.*`, best by `val_loss` plus `last.ckpt` for resuming),
  learning-rate monitoring (`--lr_monitor.*`) and prediction files (`--prediction_writer.output_dir`);
- the Trainer's default TensorBoard logger under `trainer.default_root_dir`;
- `lr_find`: the learning-rate range test on the same model and data (vision_lightning/lr_find.py);
  its arguments come from `VisionTrainer.lr_find`, the Trainer class used for every subcommand;
- bad input ends with one line (`error: ...`) and exit status 2, not a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import vision_lightning  # noqa: F401  (registers the modules and data modules for short class names)
from vision_lightning.callbacks.checkpoint import ModelCheckpoint
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.lr_find import VisionTrainer
from vision_lightning.utils.errors import InputError

DATA_TO_MODEL_LINKS = {
    "num_classes": "num_classes",
    "class_names": "class_names",
    "label_mode": "label_mode",
    "channels": "in_channels",
    "mode": "mode",
    "ignore_index": "ignore_index",
    "scale": "scale",
    "style_image": "style_image",
    "style_size": "style_size",
    "num_features": "num_features",
}


class VisionCLI(LightningCLI):
    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # optimizers are chosen by name in the model's arguments
            trainer_class=VisionTrainer,  # adds the lr_find subcommand
            args=args,
            run=run,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's four, plus `lr_find` (arguments: those of `VisionTrainer.lr_find`)."""
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_loss",
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-val_loss{val_loss:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        for source, target in DATA_TO_MODEL_LINKS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def before_predict(self) -> None:
        """Predictions stream to files through PredictionWriter; Lightning would also keep every
        batch's output in memory for the return value (gigabytes for a large embedding set), so
        `return_predictions` is off unless asked for."""
        config = self.config_init[self.subcommand]
        if config.get("return_predictions") is None:
            config["return_predictions"] = False

    def before_instantiate_classes(self) -> None:
        """With `--ckpt_path` the checkpoint holds every weight: do not download ImageNet weights or
        read a `weights:` file first (offline, predicting a `pretrained: true` recipe would fail)."""
        if not self.subcommand or not self.config[self.subcommand].get("ckpt_path"):
            return
        init_args = self.config[self.subcommand].model.get("init_args")
        if init_args is None:
            return
        overrides = [("pretrained", False), ("weights", None)]
        if self.subcommand == "predict":  # a loss network is not used to predict (SR, style transfer)
            overrides += [("feature_pretrained", False), ("feature_weights", None)]
        for key, value in overrides:
            if key in init_args:
                init_args[key] = value


def _input_error(error: BaseException | None) -> InputError | None:
    """Our own error behind `error`: jsonargparse re-raises errors of constructors as its own."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def main(args: Any = None) -> None:
    try:
        VisionCLI(args=args)
    except Exception as error:
        cause = _input_error(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
