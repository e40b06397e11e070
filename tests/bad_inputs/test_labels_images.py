"""Bad-input catalogue, labels and images: label files whose values are not classes, classes that
disagree with the data, folders linked into two classes, images that are not 8-bit or not finite,
decompression bombs, tiny or elongated images and non-finite embeddings.

Each case asserts the exact outcome: an InputError whose message names the file (and line, column
or size) and the problem, or a warning naming what was skipped or doubted; some go through the CLI
(`fit --trainer.fast_dev_run true`): exit status 2 and exactly one `error:` line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import cpu_trainer, run_cli
from tests.embedding_cache import write_embedding_cache
from vision_lightning import ClassifierModule, EmbeddingDataModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import CsvLabels, ImageFolder, SyntheticShapes
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import drop_bad_images, list_images, read_image

QUICKSTART = Path(__file__).resolve().parents[2] / "configs/quickstart/classification.yaml"
SIZE = 8


def _images(folder: Path, names: list[str], size: tuple[int, int] = (SIZE, SIZE)) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (90, 120, 150)).save(folder / name)
    return folder


def _label_csv(tmp_path: Path, header: str, rows: list[str]) -> Path:
    """`tmp_path/train.csv` with `header` and `rows` verbatim, beside images img0.png, img1.png..."""
    _images(tmp_path, [f"img{i}.png" for i in range(len(rows))])
    path = tmp_path / "train.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _data(source, **kwargs) -> ImageClassificationDataModule:
    options = {"image_size": SIZE, "batch_size": 2, "mean": [0.0], "std": [1.0], **kwargs}
    return ImageClassificationDataModule(source, **options)


def _tree(tmp_path: Path) -> Path:
    return _images(tmp_path / "tree", ["a/x0.png", "a/x1.png", "b/y0.png", "b/y1.png"])


# ----------------------------------------------------------------------------- errors, Python API
def csv_empty_label(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,cat", "img1.png,", "img2.png,dog"])
    return lambda: _data(CsvLabels(str(path))), f"{path} line 3 column 'label' is empty"


def csv_nan_label(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,cat", "img1.png,dog", "img2.png,NaN"])
    return lambda: _data(CsvLabels(str(path))), f"{path} line 4 column 'label' holds 'NaN', a missing value"


def csv_fractional_class_id(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,0", "img1.png,2.5", "img2.png,1"])
    return lambda: _data(
        CsvLabels(str(path))
    ), f"{path} line 3 column 'label' holds '2.5': class ids are whole"


def csv_ids_and_names_mixed(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,1", "img1.png,b", "img2.png,0"])
    expected = f"{path} line 3 column 'label' holds the name 'b' but line 2 holds the number '1'"
    return lambda: _data(CsvLabels(str(path))), expected


def csv_id_past_num_classes(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,0", "img1.png,1", "img2.png,3"])
    expected = f"{path} line 4 column 'label' holds class id 3, but num_classes is 2"
    return lambda: _data(CsvLabels(str(path), num_classes=2)), expected


def csv_one_image_two_labels(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,a", "img1.png,b", "img0.png,b"])
    expected = f"{path} lists {tmp_path / 'img0.png'} on line 2 and again on line 4 with another label"
    return lambda: _data(CsvLabels(str(path))).setup(), expected


def soft_label_not_finite(tmp_path, value="inf"):
    path = _label_csv(tmp_path, "image,healthy,sick", ["img0.png,1,0", f"img1.png,{value},0", "img2.png,0,1"])
    source = CsvLabels(str(path), label_columns=["healthy", "sick"])
    return lambda: _data(source, label_mode="soft").setup(), f"{path} line 3 column 'healthy' holds '{value}'"


def soft_label_nan(tmp_path):
    return soft_label_not_finite(tmp_path, "nan")


def soft_label_above_one(tmp_path):
    path = _label_csv(tmp_path, "image,healthy,sick", ["img0.png,1,0", "img1.png,0,1.2"])
    source = CsvLabels(str(path), label_columns=["healthy", "sick"])
    expected = f"{path} line 3 column 'sick' holds '1.2': soft labels are probabilities in 0..1"
    return lambda: _data(source, label_mode="soft").setup(), expected


def class_names_not_the_folders(tmp_path):
    root = _tree(tmp_path)
    expected = f"{root} has class folder(s) ['a', 'b'] that the training classes ['cat', 'dog'] lack"
    return lambda: _data(ImageFolder(str(root), class_names=["cat", "dog"])), expected


def model_num_classes_not_the_data(tmp_path):
    def fit():
        data = _data(SyntheticShapes(samples=8, num_classes=3), image_size=32)
        cpu_trainer(fast_dev_run=True).fit(ClassifierModule("cifar_lenet", num_classes=5), data)

    return fit, "the model has num_classes=5 but the data has 3 classes (circle, square, triangle)"


def class_folder_linked_twice(tmp_path):
    root = _tree(tmp_path)
    (root / "c").symlink_to(root / "a")
    expected = f"{root / 'a/x0.png'} (class a) and {root / 'c/x0.png'} (class c) are the same file"
    return lambda: _data(ImageFolder(str(root))), expected


def link_from_a_class_to_the_root(tmp_path):
    root = _tree(tmp_path)
    (root / "a/all").symlink_to(root)
    expected = f"{root / 'a/all/b/y0.png'} (class a) and {root / 'b/y0.png'} (class b) are the same file"
    return lambda: _data(ImageFolder(str(root))), expected


def float_image_with_nan(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.array([[0.1, np.nan], [0.3, 0.4]], dtype=np.float32)).save(path)
    return lambda: read_image(path), f"image {path} has non-finite pixel values (NaN or infinity)"


def float_image_negative(tmp_path):
    path = tmp_path / "signed.tif"
    Image.fromarray(np.array([[-0.5, 0.5]], dtype=np.float32)).save(path)
    return lambda: read_image(path), f"image {path} is a float image with negative values (-0.5 to 0.5)"


def decompression_bomb(tmp_path):
    path = _images(tmp_path, ["huge.png"], size=(60, 50)) / "huge.png"

    def read():
        with pytest.MonkeyPatch.context() as patch, pytest.warns(Image.DecompressionBombWarning):
            patch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3,000 pixels: PIL only warns
            read_image(path)

    return read, f"image {path} is not read: 60x50 pixels (0.0 million) is more than PIL's decompression-bomb"


def embeddings_not_finite(tmp_path):
    write_embedding_cache(tmp_path, rows=10)
    values = np.load(tmp_path / "embeddings_train.npy")
    values[4, 0] = np.inf
    np.save(tmp_path / "embeddings_train.npy", values)
    expected = f"{tmp_path / 'embeddings_train.npy'} row 4 holds a NaN or infinite value"
    return lambda: EmbeddingDataModule(str(tmp_path)).setup(), expected


ERRORS: dict[str, Callable] = {case.__name__: case for case in [
    csv_empty_label, csv_nan_label, csv_fractional_class_id, csv_ids_and_names_mixed, csv_id_past_num_classes,
    csv_one_image_two_labels, soft_label_nan, soft_label_not_finite, soft_label_above_one,
    class_names_not_the_folders, model_num_classes_not_the_data, class_folder_linked_twice,
    link_from_a_class_to_the_root, float_image_with_nan, float_image_negative, decompression_bomb,
    embeddings_not_finite,
]}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_input_is_an_input_error_naming_it(case, tmp_path):
    action, expected = ERRORS[case](tmp_path)
    with pytest.raises(InputError) as error:
        action()
    assert str(error.value).startswith(expected) or expected in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- warnings
def bomb_skipped(tmp_path):
    paths = [
        _images(tmp_path, ["huge.png"], size=(60, 50)) / "huge.png",
        _images(tmp_path, ["ok.png"]) / "ok.png",
    ]

    def check():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # past twice the limit: PIL refuses at open
            assert drop_bad_images(paths, "skip", "the set") == [1]

    return check, f"Skipping 1 unreadable image(s) in the set: {paths[0]} (DecompressionBombError"


def one_pixel_image(tmp_path):
    paths = [
        _images(tmp_path, ["pixel.gif"], size=(1, 1)) / "pixel.gif",
        _images(tmp_path, ["ok.png"]) / "ok.png",
    ]
    return lambda: drop_bad_images(
        paths, "skip", "the set"
    ), f"{paths[0]} (1x1 pixels, a side under 2 pixels)"


def elongated_image(tmp_path):
    paths = [_images(tmp_path, ["strip.png"], size=(400, 3)) / "strip.png"]
    expected = f"{paths[0]} (400x3 pixels, an aspect ratio beyond 50:1)"
    return lambda: drop_bad_images(paths, "error", "the set"), expected


def link_loop_in_a_folder(tmp_path):
    root = _images(tmp_path / "photos", ["p.png", "sub/q.png"])
    (root / "sub/back").symlink_to(root)

    def listed():
        assert list_images(root) == [root / "p.png", root / "sub/q.png"]

    return listed, f"Not following {root / 'sub/back'}: it links back to {root.resolve()}"


def float_image_past_one(tmp_path):
    path = tmp_path / "radiance.tif"
    Image.fromarray(np.array([[0.0, 4.0]], dtype=np.float32)).save(path)
    return lambda: read_image(path), f"Float image {path} has values up to 4, past 1: scaled by its maximum"


def csv_image_listed_twice(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,a", "img1.png,b", "img0.png,a"])
    expected = f"{path} lists 1 image(s) more than once: {tmp_path / 'img0.png'} (lines 2 and 4)"
    return lambda: _data(CsvLabels(str(path))).setup(), expected


WARNINGS: dict[str, Callable] = {case.__name__: case for case in [
    bomb_skipped, one_pixel_image, elongated_image, link_loop_in_a_folder, float_image_past_one,
    csv_image_listed_twice,
]}  # fmt: skip


@pytest.mark.parametrize("case", list(WARNINGS))
def test_doubtful_input_is_used_or_skipped_with_a_warning_naming_it(case, tmp_path, caplog):
    action, expected = WARNINGS[case](tmp_path)
    with caplog.at_level(logging.WARNING, logger="vision_lightning"):
        action()
    assert expected in caplog.text, caplog.text


# ----------------------------------------------------------------------------- through the CLI
def cli_csv_nan_label(tmp_path):
    path = _label_csv(tmp_path, "image,label", ["img0.png,cat", "img1.png,nan", "img2.png,dog"])
    args = ["--data.init_args.source", "CsvLabels", "--data.init_args.source.init_args.csv_path", path]
    return (
        args,
        f"error: {path} line 3 column 'label' holds 'nan', a missing value: every row needs its class",
    )


def cli_soft_label_inf(tmp_path):
    path = _label_csv(
        tmp_path, "image,a,b", ["img0.png,1,0", "img1.png,0,1", "img2.png,inf,0", "img3.png,0,1"]
    )
    args = ["--data.init_args.source", "CsvLabels", "--data.init_args.source.init_args.csv_path", path,
            "--data.init_args.source.init_args.label_columns", "[a, b]", "--data.init_args.label_mode", "soft"]  # fmt: skip
    return args, f"error: {path} line 4 column 'a' holds 'inf': soft labels must be finite numbers"


def cli_model_num_classes_not_the_data(tmp_path):
    args = ["--model.init_args.num_classes", "7"]
    return args, "error: --model.init_args.num_classes is 7, but the data has 4: the data decides"


def cli_class_folder_linked_twice(tmp_path):
    root = _tree(tmp_path)
    (root / "b/more").symlink_to(root / "a")
    args = ["--data.init_args.source", "ImageFolder", "--data.init_args.source.init_args.root", root]
    return (
        args,
        f"error: {root / 'a/x0.png'} (class a) and {root / 'b/more/x0.png'} (class b) are the same file",
    )


CLI: dict[str, Callable] = {case.__name__: case for case in [
    cli_csv_nan_label, cli_soft_label_inf, cli_model_num_classes_not_the_data, cli_class_folder_linked_twice,
]}  # fmt: skip


@pytest.mark.parametrize("case", list(CLI))
def test_bad_input_through_the_cli_is_one_line_and_exit_status_2(case, tmp_path, capsys):
    args, expected = CLI[case](tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", QUICKSTART, "--trainer.fast_dev_run", "true",
                "--trainer.default_root_dir", tmp_path / "run", "--trainer.enable_progress_bar", "false",
                "--data.init_args.image_size", 32, *args)  # fmt: skip
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
