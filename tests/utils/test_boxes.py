"""The box geometry of `vision_lightning.utils.boxes`: scale rows and the round trip to original pixels."""

from __future__ import annotations

import pytest
import torch

from vision_lightning.utils.boxes import (
    letterbox_padding,
    letterbox_size,
    resize_scale,
    to_input,
    to_original,
)


def test_letterbox_of_a_wide_image_scales_the_long_side_and_centres_the_short_one() -> None:
    assert letterbox_size(50, 100, 64) == (32, 64)
    assert letterbox_padding(50, 100, 64) == (0, 16, 0, 16)
    assert resize_scale(50, 100, 64).tolist() == pytest.approx([0.64, 0.64, 0.0, 16.0])


def test_letterbox_of_a_tall_image_pads_left_and_right() -> None:
    assert letterbox_size(100, 40, 50) == (50, 20)
    assert letterbox_padding(100, 40, 50) == (15, 0, 15, 0)
    assert resize_scale(100, 40, 50).tolist() == pytest.approx([0.5, 0.5, 15.0, 0.0])


def test_odd_padding_puts_the_extra_pixel_right_and_bottom() -> None:
    assert letterbox_size(30, 61, 64) == (31, 64)
    assert letterbox_padding(30, 61, 64) == (0, 16, 0, 17)


def test_stretch_scales_each_axis_alone() -> None:
    assert resize_scale(50, 100, 64, "stretch").tolist() == pytest.approx([0.64, 1.28, 0.0, 0.0])


def test_unknown_resize_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="resize must be one of"):
        resize_scale(10, 10, 8, "crop")


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
@pytest.mark.parametrize("shape", [(50, 100), (97, 31), (64, 64)])
def test_to_original_undoes_to_input(mode: str, shape: tuple[int, int]) -> None:
    height, width = shape
    boxes = torch.tensor([[0.0, 0.0, width, height], [3.5, 7.0, 20.0, 25.0], [10.0, 2.0, 11.0, 3.0]])
    scale = resize_scale(height, width, 64, mode)
    back = to_original(to_input(boxes, scale), scale, torch.tensor([height, width]))
    torch.testing.assert_close(back, boxes)  # all inside the image, so nothing is clipped


def test_to_original_clips_to_the_image() -> None:
    scale = resize_scale(50, 100, 64)  # padding rows 0-15 and 48-63
    boxes = torch.tensor([[-5.0, 0.0, 70.0, 64.0]])
    back = to_original(boxes, scale, torch.tensor([50, 100]))
    assert back.tolist() == [[0.0, 0.0, 100.0, 50.0]]


def test_empty_boxes_stay_empty() -> None:
    scale = resize_scale(50, 100, 64)
    assert to_original(torch.zeros(0, 4), scale, torch.tensor([50, 100])).shape == (0, 4)
