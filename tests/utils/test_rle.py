"""Run-length encoding of masks: Carvana (absolute 1-based starts) and SIIM (relative offsets) formats."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.rle import rle_decode, rle_decode_many, rle_encode

FORMATS = ("carvana", "siim")
ORDERS = ("F", "C")
WHERE = "train_masks.csv row 12 (id 00087a6bd4dc_01)"

# 3 rows x 4 columns. Column-major ("F") pixels, 1-based: 1 1 0 | 0 0 1 | 1 0 0 | 1 1 1
# Row-major ("C") pixels, 1-based:                         1 0 1 1 | 1 0 0 1 | 0 1 0 1
MASK_3X4 = np.array([[1, 0, 1, 1], [1, 0, 0, 1], [0, 1, 0, 1]], dtype=np.uint8)
EXPECTED_3X4 = {
    ("carvana", "F"): "1 2 6 2 10 3",  # pixels 1-2, 6-7, 10-12
    ("carvana", "C"): "1 1 3 3 8 1 10 1 12 1",  # pixels 1, 3-5, 8, 10, 12
    ("siim", "F"): "0 2 3 2 2 3",  # 0-based runs 0-1, 5-6, 9-11: gaps 0, 3, 2
    ("siim", "C"): "0 1 1 3 2 1 1 1 1 1",  # 0-based runs 0, 2-4, 7, 9, 11: gaps 0, 1, 2, 1, 1
}


def _kaggle_rle_encode(mask: np.ndarray) -> str:
    """The usual Kaggle kernel encoder (row-major `flatten`, 1-based starts), as a reference."""
    pixels = np.concatenate([[0], mask.flatten(), [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def _siim_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """`rle2mask` of SIIM-ACR's mask_functions.py, as a reference; callers transpose its result."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    starts, lengths = array[0::2], array[1::2]
    current_position = 0
    for index, start in enumerate(starts):
        current_position += start
        mask[current_position : current_position + lengths[index]] = 255
        current_position += lengths[index]
    return mask.reshape(width, height)


def _random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 7), (7, 1), (5, 5), (3, 8), (17, 6), (64, 48)]:
        yield rng.random(shape) < 0.3
        yield rng.random(shape) < 0.8
        yield np.zeros(shape, dtype=np.uint8)
        yield np.ones(shape, dtype=np.uint8)
        corners = np.zeros(shape, dtype=np.uint8)
        corners[0, 0] = corners[-1, -1] = 1
        yield corners
        last = np.zeros(shape, dtype=np.uint8)
        last[-1, -1] = 1
        yield last


RANDOM_MASKS = list(_random_masks())


# ---------------------------------------------------------------- hand-computed examples


@pytest.mark.parametrize("format,order", list(itertools.product(FORMATS, ORDERS)))
def test_hand_computed_3x4(format, order):
    expected = EXPECTED_3X4[format, order]
    assert rle_encode(MASK_3X4, format, order) == expected
    decoded = rle_decode(expected, (3, 4), format, order)
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 4)
    np.testing.assert_array_equal(decoded, MASK_3X4)


def test_carvana_example_1_3_10_5():
    # 4 rows x 5 columns, column-major: "1 3" = pixels 1, 2, 3 (rows 0-2 of column 0);
    # "10 5" = pixels 10-14 = rows 1-3 of column 2 and rows 0-1 of column 3.
    expected = np.zeros((4, 5), dtype=np.uint8)
    expected[0:3, 0] = 1
    expected[1:4, 2] = 1
    expected[0:2, 3] = 1
    np.testing.assert_array_equal(rle_decode("1 3 10 5", (4, 5)), expected)
    assert rle_encode(expected) == "1 3 10 5"
    # Row-major, the same string covers row 0's first three pixels and pixels 10-14
    # (row 1 col 4 to row 2 col 3).
    row_major = np.zeros((4, 5), dtype=np.uint8)
    row_major[0, 0:3] = 1
    row_major[1, 4] = 1
    row_major[2, 0:4] = 1
    np.testing.assert_array_equal(rle_decode("1 3 10 5", (4, 5), order="C"), row_major)


def test_pixel_2_is_row_1_column_0_in_f_order():
    expected = np.zeros((3, 3), dtype=np.uint8)
    expected[1, 0] = 1
    np.testing.assert_array_equal(rle_decode("2 1", (3, 3)), expected)
    expected_c = np.zeros((3, 3), dtype=np.uint8)
    expected_c[0, 1] = 1
    np.testing.assert_array_equal(rle_decode("2 1", (3, 3), order="C"), expected_c)


def test_empty_masks():
    empty = np.zeros((4, 6), dtype=bool)
    assert rle_encode(empty) == ""
    assert rle_encode(empty, order="C") == ""
    assert rle_encode(empty, "siim") == "-1"
    for text in ("", "-1", " -1", "-1 ", "  "):
        np.testing.assert_array_equal(rle_decode(text, (4, 6), "siim"), empty)
    for text in ("", "   ", None, float("nan")):  # pandas reads an empty CSV cell as NaN
        np.testing.assert_array_equal(rle_decode(text, (4, 6)), empty)


def test_nonzero_is_foreground_for_any_dtype():
    mask = np.array([[0.0, 0.5], [-3.0, 0.0]])
    assert rle_encode(mask) == "2 2"
    assert rle_encode(mask.astype(bool), order="C") == "2 2"
    assert rle_encode([[0, 7], [0, 0]]) == "3 1"


# ---------------------------------------------------------------- SIIM


def test_siim_relative_offsets():
    # 5 rows x 4 columns, column-major, 0-based: "2 3" = pixels 2-4 (rows 2-4 of column 0), ending at 5;
    # "4 1" = 4 pixels after that = pixel 9 (row 4 of column 1).
    expected = np.zeros((5, 4), dtype=np.uint8)
    expected[2:5, 0] = 1
    expected[4, 1] = 1
    np.testing.assert_array_equal(rle_decode("2 3 4 1", (5, 4), "siim"), expected)
    assert rle_encode(expected, "siim") == "2 3 4 1"
    assert rle_encode(expected, "carvana") == "3 3 10 1"  # the same runs with absolute 1-based starts


def test_siim_matches_official_rle2mask():
    for mask in RANDOM_MASKS:
        height, width = mask.shape
        text = rle_encode(mask, "siim")
        if text == "-1":
            continue
        reference = _siim_rle2mask(text, width, height).T > 0
        np.testing.assert_array_equal(rle_decode(text, mask.shape, "siim"), reference)
        np.testing.assert_array_equal(reference, mask != 0)


def test_carvana_c_order_matches_kaggle_kernel_encoder():
    for mask in RANDOM_MASKS:
        assert rle_encode(mask, "carvana", "C") == _kaggle_rle_encode((mask != 0).astype(np.uint8))


def test_decode_many_is_the_union_of_instances():
    first = np.zeros((6, 5), dtype=np.uint8)
    first[1:3, 1:3] = 1
    second = np.zeros((6, 5), dtype=np.uint8)
    second[2:5, 2:4] = 1
    rles = [rle_encode(first, "siim"), rle_encode(second, "siim"), " -1"]
    union = rle_decode_many(rles, (6, 5), "siim")
    assert union.dtype == np.uint8 and union.shape == (6, 5)
    np.testing.assert_array_equal(union, first | second)
    np.testing.assert_array_equal(rle_decode_many(iter(rles[:1]), (6, 5), "siim"), first)
    np.testing.assert_array_equal(rle_decode_many([], (6, 5), "siim"), np.zeros((6, 5), np.uint8))
    # a lone string is one RLE, not a list of characters
    np.testing.assert_array_equal(rle_decode_many(rle_encode(second), (6, 5)), second)


# ---------------------------------------------------------------- round trips and symmetries


@pytest.mark.parametrize("format,order", list(itertools.product(FORMATS, ORDERS)))
def test_round_trip(format, order):
    for mask in RANDOM_MASKS:
        text = rle_encode(mask, format, order)
        decoded = rle_decode(text, mask.shape, format, order)
        assert decoded.dtype == np.uint8 and decoded.shape == mask.shape
        np.testing.assert_array_equal(decoded, (mask != 0).astype(np.uint8))


def test_all_ones_and_first_and_last_pixel():
    assert rle_encode(np.ones((3, 5))) == "1 15"
    assert rle_encode(np.ones((3, 5)), "siim") == "0 15"
    corners = np.zeros((3, 5), dtype=np.uint8)
    corners[0, 0] = corners[-1, -1] = 1
    assert rle_encode(corners) == "1 1 15 1"
    assert rle_encode(corners, "siim") == "0 1 13 1"


def test_c_order_is_f_order_of_the_transpose():
    for mask in RANDOM_MASKS:
        for format in FORMATS:
            assert rle_encode(mask, format, "C") == rle_encode(mask.T, format, "F")


def test_carvana_overlapping_and_unsorted_runs_are_a_union():
    expected = np.zeros(12, dtype=np.uint8)
    expected[[0, 1, 4, 5, 6, 7, 8]] = 1  # 1-based pixels 1-2 and 5-9
    decoded = rle_decode("5 3 1 2 6 4", (3, 4), order="C")
    np.testing.assert_array_equal(decoded, expected.reshape(3, 4))


def test_large_mask_round_trip():
    rng = np.random.default_rng(1)
    mask = np.zeros((1280, 1918), dtype=np.uint8)
    mask[200:900, 300:1500] = 1
    mask[rng.random(mask.shape) < 0.001] = 1
    for format, order in itertools.product(FORMATS, ORDERS):
        np.testing.assert_array_equal(
            rle_decode(rle_encode(mask, format, order), mask.shape, format, order), mask
        )


# ---------------------------------------------------------------- errors


def _raises(message: str):
    return pytest.raises(InputError, match=re.escape(message))


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), ()])
def test_encode_needs_a_2d_mask(shape):
    with _raises(f"2-D (height, width) mask, got shape {shape}"):
        rle_encode(np.zeros(shape))


def test_odd_number_of_values():
    with _raises(f"{WHERE}: the RLE has an odd number of values (3)"):
        rle_decode("1 2 3", (4, 4), where=WHERE)
    with _raises(f"{WHERE}: the RLE has an odd number of values (1); it must be pairs of offset and length"):
        rle_decode("5", (4, 4), "siim", where=WHERE)


@pytest.mark.parametrize(
    "text,index,token",
    [("1 x", 2, "x"), ("1.5 2", 1, "1.5"), ("1 2 3 99999999999999999999", 4, "99999999999999999999")],
)
def test_non_integer_token(text, index, token):
    with _raises(f"{WHERE}: value {index} of the RLE, {token!r}, is not an integer"):
        rle_decode(text, (4, 4), where=WHERE)


def test_non_string_rle():
    with _raises(f"{WHERE}: the RLE must be a string, got int"):
        rle_decode(5, (4, 4), where=WHERE)


def test_carvana_start_below_1():
    with _raises(f"{WHERE}: run 2 has start 0; carvana starts are 1-based and at least 1"):
        rle_decode("1 2 0 3", (4, 4), where=WHERE)
    with _raises(f"{WHERE}: run 1 has start -1"):
        rle_decode("-1 3", (4, 4), where=WHERE)
    with _raises(f"{WHERE}: '-1' is how the siim format writes an empty mask"):
        rle_decode(" -1", (4, 4), where=WHERE)


def test_siim_negative_offset():
    with _raises(f"{WHERE}: run 2 has offset -3; siim offsets are 0 or more"):
        rle_decode("0 2 -3 1", (4, 4), "siim", where=WHERE)
    with _raises(f"{WHERE}: run 1 has offset -1"):
        rle_decode("-1 4", (4, 4), "siim", where=WHERE)


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("length", [0, -2])
def test_length_below_1(format, length):
    name = "start" if format == "carvana" else "offset"
    with _raises(f"{WHERE}: run 2 ({name} 5) has length {length}; lengths must be 1 or more"):
        rle_decode(f"1 1 5 {length}", (4, 4), format, where=WHERE)


def test_carvana_run_past_the_end():
    message = (
        f"{WHERE}: run 3 (start 1000, length 50) ends at pixel 1049, "
        "past the end of the 32x32 image (1024 pixels)"
    )
    with _raises(message):
        rle_decode("1 2 10 3 1000 50", (32, 32), where=WHERE)
    with _raises("run 1 (start 15, length 2) ends at pixel 16, past the end of the 3x5 image (15 pixels)"):
        rle_decode("15 2", (3, 5), order="C")
    rle_decode("15 1", (3, 5))  # the last pixel itself is fine


def test_siim_run_past_the_end():
    # runs: 0-based 0-1, then 3 pixels later 5-7, then 4 later 12-15: the image has 0-14
    with _raises(
        f"{WHERE}: run 3 (offset 4, length 4) ends at 0-based pixel 15, "
        "past the end of the 3x5 image (15 pixels)"
    ):
        rle_decode("0 2 3 3 4 4", (3, 5), "siim", where=WHERE)
    rle_decode("0 2 3 3 4 3", (3, 5), "siim")


def test_huge_values_past_the_end_do_not_overflow():
    big = 2**62
    with _raises(f"run 1 (start {big}, length {big}) ends at pixel {2 * big - 1}, past the end"):
        rle_decode(f"{big} {big}", (4, 4))
    with _raises(f"run 2 (offset {big}, length {big}) ends at 0-based pixel {2 * big + 1}, past the end"):
        rle_decode(f"0 2 {big} {big}", (4, 4), "siim")


def test_decode_many_names_the_instance():
    with _raises(f"{WHERE} (RLE 2 of 3): run 1 (offset 20, length 1) ends at 0-based pixel 20"):
        rle_decode_many(["0 1", "20 1", "-1"], (4, 5), "siim", where=WHERE)


@pytest.mark.parametrize("shape", [(0, 4), (4,), (2.5, 3), "ab", None])
def test_bad_shape(shape):
    with _raises(f"{WHERE}: the mask shape must be two positive integers (height, width), got {shape!r}"):
        rle_decode("1 1", shape, where=WHERE)


def test_bad_format_and_order():
    with _raises("RLE format must be one of carvana, siim, got 'coco'"):
        rle_encode(MASK_3X4, format="coco")
    with _raises("RLE pixel order must be 'F' (column-major) or 'C' (row-major), got 'A'"):
        rle_decode("1 1", (3, 4), order="A")
