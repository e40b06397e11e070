"""Output file names: class names and image names cleaned before they reach a file name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_lightning.outputs.files import MAX_NAME_BYTES, UniqueNames, clean_name, unique_clean_names
from vision_lightning.outputs.masks import MaskSink


@pytest.mark.parametrize(
    "name, cleaned",
    [
        ("cat", "cat"),
        ("../evil", "_evil"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("..", "_"),
        ("", "_"),
        (".hidden", "hidden"),
        ("tab\there\nnew", "tab_here_new"),
        ("right\u202eleft", "right_left"),  # an invisible direction override
        ('q?u*o<t>e:"|', "q_u_o_t_e___"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("com1", "_com1"),
        ("console", "console"),
        ("a..b", "a.b"),
        ("trailing. ", "trailing"),
        ("café", "café"),
    ],
)
def test_clean_name(name, cleaned):
    assert clean_name(name) == cleaned


def test_long_names_are_cut_and_stay_distinct():
    first, second = "x" * 300 + "1", "x" * 300 + "2"
    cleaned = clean_name(first), clean_name(second)
    assert all(len(name.encode()) <= MAX_NAME_BYTES for name in cleaned)
    assert cleaned[0] != cleaned[1]
    assert len(clean_name("é" * 200).encode()) <= MAX_NAME_BYTES  # never half a character


def test_names_equal_after_cleaning_are_made_unique():
    assert unique_clean_names(["a/b", "a_b", "A_B", "../evil"]) == ["a_b", "a_b_2", "A_B_3", "_evil"]


def test_unique_names_from_paths_are_clean_and_distinct_whatever_the_case():
    names = UniqueNames(["x/../evil.png", "d1/Img.png", "d2/img.png", "d2/img.jpg", "CON.png"])
    assert [names(p) for p in ("x/../evil.png", "d1/Img.png", "d2/img.png", "d2/img.jpg", "CON.png")] == [
        "evil",
        "Img",
        "d2_img",
        "d2_img_2",
        "_CON",
    ]


def test_multilabel_masks_of_class_names_with_separators_stay_in_their_folder(tmp_path: Path):
    classes = ["../evil", "a/b", "a_b"]
    sink = MaskSink(tmp_path / "out", "", "multilabel", classes)
    mask = np.zeros((3, 4, 4), dtype=np.uint8)
    mask[1] = 1
    sink.write({"path": ["in/../../x.png"], "masks": [mask]})
    sink.close()
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["out/masks/x__evil.png", "out/masks/x_a_b.png", "out/masks/x_a_b_2.png"]
    assert np.asarray(Image.open(tmp_path / "out/masks/x_a_b.png")).max() == 255
