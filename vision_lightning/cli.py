"""`python -m vision_lightning {fit,validate,test,predict,lr_find} --config FILE`: LightningCLI with defaults.

- model and data in subclass mode (`class_path: vision_lightning.ClassifierModule`);
- data-defined arguments linked into the model, so nobody writes them twice: `num_classes`,
  `class_names`, `label_mode`, `mode`, `ignore_index`, `scale`, `style_image`, `style_size`, `num_features`, and `channels` -> `in_channels` (Lightning #9473, #17275);
  a link whose target the chosen model lacks is skipped;
- `--optimizer` / `--lr_scheduler` (Lightning's own arguments) are handed to the model's
  `optimizer` / `lr_scheduler`, so the task still builds its parameter groups;
- the progress bar is redrawn at most twice a second (`ThrottledProgressBar`);
- always on: checkpointing (`--checkpoint.*`, best by `val/loss` plus `last.ckpt` for resuming;
  `fit --ckpt_path FILE` checks the file first and logs on in its run's `version_N` folder: resume.py),
  learning-rate monitoring (`--lr_monitor.*`) and prediction files (`--prediction_writer.output_dir`);
- the default logger is TensorBoard (`QuietTensorBoardLogger`) under `trainer.default_root_dir`;
- the resolved config is saved in the run's log folder (or beside its checkpoints without a
  logger), never over a file that is already there;
- `predict_images --ckpt_path FILE --images FOLDER`: predictions from a checkpoint alone;
- `convert --config FILE --output ROOT`: the config's data as LitData chunks to stream
  (`StreamingClassification`, `StreamingSegmentation`; vision_lightning/data/streaming_convert.py);
- `export --ckpt_path FILE --output DIR`: the checkpoint's network as ONNX / torch.export files with
  its preprocessing (vision_lightning/export);
- `lr_find`: the learning-rate range test on the same model and data (vision_lightning/lr_find.py);
  its arguments come from `VisionTrainer.lr_find`, the Trainer class used for every subcommand;
- bad input ends with one line (`error: ...`) and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

import vision_lightning  # noqa: F401  (registers the modules and data modules for short class names)
from vision_lightning.callbacks.checkpoint import ModelCheckpoint
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.callbacks.progress_bar import ThrottledProgressBar
from vision_lightning.cli_errors import VisionArgumentParser, concise, config_files
from vision_lightning.data import ImageClassificationDataModule, SegmentationDataModule
from vision_lightning.lr_find import VisionTrainer
from vision_lightning.resume import check_resumable, resumed_logger_args
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.checkpoints import check_task_class, read_checkpoint
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.paths import check_output_folder

DEFAULT_MONITOR = "val/loss"
DEFAULT_CHECKPOINT_NAME = "epoch{epoch:03d}-val_loss{val/loss:.4f}"
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


class LoggedLearningRates(LearningRateMonitor):
    """Lightning's LearningRateMonitor, idle in a run without a logger (`--trainer.logger false`)
    instead of refusing to start."""

    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)


class SaveRunConfig(SaveConfigCallback):
    """The resolved config as `config.yaml` in the run's log folder (beside the checkpoints when
    there is no logger; nowhere without either), never over an existing file (`config_1.yaml`...)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        folder = _run_folder(trainer)
        if folder is not None and trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            name = Path(self.config_filename)
            path, count = folder / name, 0
            while path.exists():
                count += 1
                path = folder / f"{name.stem}_{count}{name.suffix}"
            self.parser.save(self.config, path, skip_none=False, overwrite=False, multifile=self.multifile)
        self.already_saved = trainer.strategy.broadcast(True)
        # Done for good: leave the list Lightning walks for every hook of every step (a new list, so
        # the walk through this setup's list goes on undisturbed).
        trainer.callbacks = [callback for callback in trainer.callbacks if callback is not self]


def _run_folder(trainer: pl.Trainer) -> Path | None:
    if trainer.loggers:
        return Path(trainer.log_dir) if trainer.log_dir else None
    checkpoint = trainer.checkpoint_callback
    dirpath = getattr(checkpoint, "dirpath", None)
    return Path(dirpath) if dirpath else None


class VisionCLI(LightningCLI):
    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", SaveRunConfig)
        kwargs.setdefault("parser_class", VisionArgumentParser)
        self._argv = list(sys.argv[1:] if args is None else args)
        self._config_files = config_files(self._argv)
        super().__init__(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=VisionTrainer,  # adds the lr_find subcommand
            args=args,
            run=run,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        parser = super().init_parser(**kwargs)
        parser.config_files = self._config_files  # named in a YAML syntax error
        return parser

    def _parse_ckpt_path(self) -> None:
        """Lightning's (the checkpoint's hyperparameters become the model's arguments), with a bad
        file or another task's checkpoint named in one sentence, and the file read once, mapped."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc", "registry"):
            return
        checkpoint = read_checkpoint(ckpt_path, mmap=True)
        model = self.config[subcommand].get("model")
        if isinstance(model, Namespace) and model.get("class_path"):
            check_task_class(checkpoint, ckpt_path, model.class_path)
        if subcommand == "fit":  # resuming: its logs go on in the checkpoint's run (resume.py)
            check_resumable(checkpoint, ckpt_path)
            self._resumed = checkpoint
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        # test-time augmentation is chosen by the run that tests or predicts, not by the one that trained
        # (the checkpoint's values are applied over the command line's: Lightning-AI/pytorch-lightning#21455)
        hparams.pop("tta", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        elif checkpoint.get("task_class"):  # saved from Python: the task records its class itself
            hparams = {"class_path": checkpoint["task_class"], "init_args": hparams}
        self.parser.exit_on_error = False
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ArgumentError as error:
            raise InputError(
                f"checkpoint {ckpt_path} holds hyperparameters this model does not take: {concise(str(error))}"
            ) from None
        finally:
            self.parser.exit_on_error = True
        self._command_line_model_arguments_win(subcommand)

    def _command_line_model_arguments_win(self, subcommand: str) -> None:
        """`--model.*` arguments typed on this command line override the checkpoint's
        hyperparameters (Lightning applies the checkpoint's last, Lightning-AI/pytorch-lightning#21455):
        a predict-time `--model.init_args.rle.order C` is what the user asked for."""
        given, rest = [], list(self._argv)
        while rest:
            arg = rest.pop(0)
            if arg.startswith("--model.") and "=" in arg:
                given.append(arg)
            elif arg.startswith("--model.") and rest:
                given += [arg, rest.pop(0)]
        if given:
            parser = self.parser._subcommands_action._name_parser_map[subcommand]
            self.config[subcommand] = parser.parse_args(given, namespace=self.config[subcommand])

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's four, plus `lr_find` (arguments: those of `VisionTrainer.lr_find`)."""
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Lightning's, with `ThrottledProgressBar` where Lightning would add its own bar (progress
        shown and no progress bar among the callbacks): redrawing after every batch costs a small
        network a few percent of its speed."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if config.get("enable_progress_bar") is not False and not any(
            isinstance(callback, ProgressBar) for callback in callbacks
        ):
            kwargs.setdefault("callbacks", [*callbacks, ThrottledProgressBar()])
        return super().instantiate_trainer(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": DEFAULT_MONITOR,
                "checkpoint.mode": "min",
                "checkpoint.save_last": True,
                "checkpoint.filename": DEFAULT_CHECKPOINT_NAME,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LoggedLearningRates, "lr_monitor")
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
        config = self.config[self.subcommand] if self.subcommand else self.config
        self._hand_optimizer_to_model(config)
        self._default_logger(config, getattr(self, "_resumed", None))
        if self.subcommand:
            self._no_weights_before_checkpoint(config, predicting=self.subcommand == "predict")
        self._check_output_folders(config)
        self._given_classes = _model_classes_given(config)
        _checkpoint_follows_the_task(config)

    def instantiate_classes(self) -> None:
        """Lightning's; then a `num_classes` / `class_names` given to the model itself that the data
        contradicts is an error: the link would replace it by the data's without a word."""
        super().instantiate_classes()
        data = self.datamodule
        for key, given in getattr(self, "_given_classes", {}).items():
            found = getattr(data, key, None)
            if found is not None and (list(found) if key == "class_names" else found) != given:
                raise InputError(
                    f"--model.init_args.{key} is {given}, but the data has {found}: the data decides "
                    f"({key} is linked from it); drop the model's {key} or fix the data's"
                )

    @staticmethod
    def _hand_optimizer_to_model(config: Any) -> None:
        """`--optimizer` / `--lr_scheduler` become the model's own `optimizer` / `lr_scheduler`
        arguments (saved with its hyperparameters), instead of Lightning replacing the model's
        `configure_optimizers` and with it the task's parameter groups."""
        init_args = config.model.get("init_args") if config.get("model") else None
        for key in ("optimizer", "lr_scheduler"):
            value = config.get(key)
            if value is None:
                continue
            if init_args is None or key not in init_args:
                raise InputError(f"--{key} is given, but the model has no {key} argument to take it")
            init_args[key] = value
            config[key] = None

    @staticmethod
    def _check_output_folders(config: Any) -> None:
        """A folder the run will write to that is a file, or cannot be written, named before any work."""
        for key in ("trainer.default_root_dir", "checkpoint.dirpath"):  # PredictionWriter checks its own
            value = config.get(key)
            if value:
                check_output_folder(value, f"--{key}")

    @staticmethod
    def _default_logger(config: Any, checkpoint: dict[str, Any] | None = None) -> None:
        """TensorBoard without `hp_metric` and with the epoch out of the way (QuietTensorBoardLogger);
        resuming from a `checkpoint` in a run's folder, on in that folder (vision_lightning/resume.py)."""
        trainer = config.get("trainer")
        ckpt_path = config.get("ckpt_path")
        if trainer is None or trainer.get("logger") not in (None, True):
            return
        root = trainer.get("default_root_dir") or "."
        init_args = Namespace(save_dir=str(root))
        if checkpoint is not None:
            for key, value in resumed_logger_args(ckpt_path, root, checkpoint).items():
                init_args[key] = value
        trainer["logger"] = Namespace(
            class_path="vision_lightning.utils.loggers.QuietTensorBoardLogger", init_args=init_args
        )

    @staticmethod
    def _no_weights_before_checkpoint(config: Any, predicting: bool) -> None:
        """With `--ckpt_path` the checkpoint holds every weight: do not download ImageNet weights or
        read a `weights:` file first (offline, predicting a `pretrained: true` recipe would fail)."""
        if not config.get("ckpt_path"):
            return
        init_args = config.model.get("init_args")
        if init_args is None:
            return
        overrides = [("pretrained", False), ("weights", None)]
        if predicting:  # a loss network is not used to predict (SR, style transfer)
            overrides += [("feature_pretrained", False), ("feature_weights", None)]
        for key, value in overrides:
            if key in init_args:
                init_args[key] = value


def _model_class(config: Any) -> type | None:
    """The model class the config names (`model.class_path`), or None."""
    import importlib

    model = config.get("model") if hasattr(config, "get") else None
    init_args = model.get("init_args") if model is not None and hasattr(model, "get") else None
    class_path = model.get("class_path") if init_args is not None else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, name = class_path.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _model_classes_given(config: Any) -> dict[str, Any]:
    """`num_classes` / `class_names` set on the model to other than its own defaults (the CLI replaces
    them with the data's: `DATA_TO_MODEL_LINKS`)."""
    import inspect

    model_class = _model_class(config)
    if model_class is None:
        return {}
    try:
        parameters = inspect.signature(model_class).parameters
    except (TypeError, ValueError):
        return {}
    init_args = config.model.init_args
    given = {}
    for key in ("num_classes", "class_names"):
        value = init_args.get(key)
        if key in parameters and value is not None and value != parameters[key].default:
            given[key] = list(value) if key == "class_names" else value
    return given


def _checkpoint_follows_the_task(config: Any) -> None:
    """The checkpoint's defaults (best by `val/loss`, lowest first) follow a task that monitors
    another metric (DetectionModule: `val/map_50`, highest first), unless the config sets them."""
    model_class = _model_class(config)
    checkpoint = config.get("checkpoint") if hasattr(config, "get") else None
    monitor = getattr(model_class, "monitor", DEFAULT_MONITOR)
    if checkpoint is None or monitor == DEFAULT_MONITOR or checkpoint.get("monitor") != DEFAULT_MONITOR:
        return
    checkpoint.monitor = monitor
    checkpoint.mode = getattr(model_class, "monitor_mode", "min")
    if checkpoint.get("filename") == DEFAULT_CHECKPOINT_NAME:
        checkpoint.filename = "epoch{epoch:03d}-" + monitor.replace("/", "_") + "{" + monitor + ":.4f}"


def _input_error(error: BaseException | None) -> Exception | None:
    """Our own error behind `error` (jsonargparse re-raises errors of constructors as its own), or
    Lightning's MisconfigurationException: a Trainer setting that cannot work (`max_epochs: -5`,
    `accelerator: gpu` without one) is bad input too."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (InputError, MisconfigurationException)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose mistakes are one line naming the option (an InputError), like the rest."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog.split()[-1]}: {message} (--help lists the options)")


def predict_images_command(argv: list[str]) -> None:
    """`predict_images --ckpt_path FILE --images PATH [--output_dir DIR] [--batch_size N] [--existing
    error|overwrite|add] [--tta]`: the checkpoint's task predicts the images with the preprocessing saved in
    it; files as `predict` writes them."""
    parser = OneLineArgumentParser(
        prog="python -m vision_lightning predict_images", description=predict_images_command.__doc__
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit")
    parser.add_argument("--images", required=True, help="an image file or a folder of images")
    parser.add_argument("--output_dir", default="predictions", help="where the prediction files go")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--existing",
        choices=["error", "overwrite", "add"],
        default="error",
        help="a non-empty output folder: refuse it, replace what earlier runs recorded there, or add to it",
    )
    parser.add_argument(
        "--tta", action="store_true", help="test-time augmentation: flips, or the x8 self-ensemble for SR"
    )
    options = parser.parse_args(argv)
    task = load_task(options.ckpt_path)
    task.tta = options.tta or task.tta
    path = task.predict_to_folder(
        options.images, options.output_dir, options.batch_size, options.existing, options.ckpt_path
    )
    print(f"Predictions written to {path}")


def _data_section(argv: list[str]) -> list[str]:
    """`argv` with `--config FILE` replaced by the `data:` section of that training config (as
    `--data <yaml>`, where it stood: later `--data.*` arguments override it)."""
    import yaml

    args, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg != "--config" and not arg.startswith("--config="):
            args.append(arg)
            continue
        path = arg.split("=", 1)[1] if "=" in arg else (rest.pop(0) if rest else "")
        if not Path(path).is_file():
            raise MissingInputError(f"config file {path or '(none given)'} does not exist")
        spec = yaml.safe_load(Path(path).read_text())
        if not isinstance(spec, dict) or not isinstance(spec.get("data"), dict):
            raise InputError(f"config {path} has no data section to convert")
        args += ["--data", yaml.safe_dump(spec["data"])]
    return args


def convert_command(argv: list[str]) -> None:
    """`convert [--config FILE] [--data.* ...] --output ROOT`: the data module's splits written as
    LitData chunks, for StreamingClassification / StreamingSegmentation (data/streaming_convert.py)."""
    from jsonargparse import ArgumentParser

    from vision_lightning.data.streaming_convert import convert

    parser = ArgumentParser(
        prog="python -m vision_lightning convert",
        description="Write a data module's splits as LitData chunks to stream them (StreamingClassification, "
        "StreamingSegmentation). --config FILE reads the data section of a training config; --data.* "
        "arguments override it.",
        exit_on_error=False,
    )
    modules = (ImageClassificationDataModule, SegmentationDataModule)
    parser.add_subclass_arguments(modules, "data", required=True)
    parser.add_argument(
        "--output", type=str, required=True, help="a new local folder, or an s3://, gs:// or r2:// URL"
    )
    parser.add_argument(
        "--workers", type=int | None, default=None, help="writing processes (default: one per CPU)"
    )
    parser.add_argument("--chunk_bytes", type=str, default="64MB", help="the size of a chunk")
    parser.add_argument(
        "--storage_options", type=dict | None, default=None, help="LitData's object-store options"
    )
    try:
        config = parser.parse_args(_data_section(argv))
    except ArgumentError as error:
        if _input_error(error) is not None:
            raise
        raise InputError(concise(str(error), parser, config_files(argv))) from None
    data = parser.instantiate_classes(config).data
    sizes = convert(data, config.output, config.workers, config.chunk_bytes, config.storage_options)
    counts = ", ".join(f"{count} {split}" for split, count in sizes.items())
    kind = (
        "StreamingClassification"
        if isinstance(data, ImageClassificationDataModule)
        else "StreamingSegmentation"
    )
    print(f"Converted {counts} samples of {data.source!r} into {config.output}")
    print(
        f"Stream them with source: {{class_path: vision_lightning.data.{kind}, init_args: {{root: {config.output}}}}}"
    )


def export_command(argv: list[str]) -> None:
    """`export --ckpt_path FILE --output DIR [--format onnx torch_export] [--image_size N [N]]
    [--bake_normalization] [--existing error|overwrite]`: the checkpoint's network as ONNX and/or
    torch.export files with preprocessing.json beside them (vision_lightning/export)."""
    from vision_lightning.export import export_task

    parser = OneLineArgumentParser(
        prog="python -m vision_lightning export", description=export_command.__doc__
    )
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit")
    parser.add_argument("--output", required=True, help="the folder the files go to")
    parser.add_argument(
        "--format",
        nargs="+",
        default=["onnx", "torch_export"],
        help="onnx and/or torch_export (both by default)",
    )
    parser.add_argument(
        "--image_size", type=int, nargs="+", help="N or H W: the example size (default: the checkpoint's)"
    )
    parser.add_argument(
        "--bake_normalization",
        action="store_true",
        help="mean/std inside the network: it takes [0, 1] pixels",
    )
    parser.add_argument(
        "--existing",
        choices=["error", "overwrite"],
        default="error",
        help="replace files already in --output",
    )
    options = parser.parse_args(argv)
    size = options.image_size
    if size is not None and len(size) > 2:
        raise InputError(f"export: --image_size takes N or H W, got {len(size)} numbers")
    paths = export_task(
        options.ckpt_path,
        options.output,
        options.format,
        None if size is None else (size[0] if len(size) == 1 else tuple(size)),
        options.bake_normalization,
        options.existing,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")


def main(args: Any = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv[:1] == ["predict_images"]:
            predict_images_command(argv[1:])
            return
        if argv[:1] == ["convert"]:
            convert_command(argv[1:])
            return
        if argv[:1] == ["export"]:
            export_command(argv[1:])
            return
        VisionCLI(args=args)
    except Exception as error:
        cause = _input_error(error)
        if cause is None:
            raise
        print(f"error: {' '.join(str(cause).split())}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
