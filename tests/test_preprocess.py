"""Letterbox + resize against hand-computed pixels."""
import numpy as np
import pytest

from rkvideo import models, preprocess


def test_letterbox_centres_on_grey_square():
    img = np.zeros((2, 4, 3), np.uint8)
    img[:] = (10, 20, 30)
    out = preprocess.letterbox(img, 127.5)
    assert out.shape == (4, 4, 3)
    # side 4, y offset (4-2)//2 = 1: rows 0 and 3 are fill (127.5 rounds to 128), rows 1-2 the image.
    assert (out[0] == 128).all() and (out[3] == 128).all()
    assert (out[1:3] == (10, 20, 30)).all()


def test_letterbox_odd_padding_goes_to_bottom_right():
    img = np.full((3, 6, 3), 7, np.uint8)
    out = preprocess.letterbox(img, 0)
    # side 6, top = (6-3)//2 = 1, bottom gets 2 rows
    assert (out[0] == 0).all() and (out[1:4] == 7).all() and (out[4:] == 0).all()


def test_square_input_is_unchanged():
    img = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    assert preprocess.letterbox(img) is img


def test_encoder_normalised_output_is_uint8_nhwc_rgb():
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0] = 255                                  # pure red stays in channel 0 (no BGR swap)
    out = preprocess.to_input(img, 4, normalize="encoder")
    assert out.dtype == np.uint8 and out.shape == (1, 4, 4, 3) and out.flags.c_contiguous
    assert (out[0, ..., 0] == 255).all() and (out[0, ..., 1:] == 0).all()


def test_host_normalised_output_is_float_nchw():
    img = np.full((2, 2, 3), 255, np.uint8)
    out = preprocess.to_input(img, 2, normalize="host", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    assert out.dtype == np.float32 and out.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(out[0, :, 0, 0], [(1 - 0.5) / 0.5, (1 - 0.25) / 0.25, 1.0], rtol=1e-6)


def test_resize_is_bilinear():
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 200
    out = preprocess.resize(img, 4)
    # INTER_LINEAR with half-pixel centres: columns 0,1,2,3 -> 0, 50, 150, 200
    np.testing.assert_array_equal(out[0, :, 0], [0, 50, 150, 200])


def test_profile_settings_are_used():
    prof = models.get("internvl3-1b")
    out = preprocess.for_profile(np.zeros((30, 60, 3), np.uint8), prof, normalize="host")
    assert out.shape == (1, 3, 448, 448)
    np.testing.assert_allclose(out[0, 0, 0, 0], (128 / 255 - 0.485) / 0.229, rtol=1e-5)


def test_unknown_normalize_rejected():
    with pytest.raises(ValueError):
        preprocess.to_input(np.zeros((2, 2, 3), np.uint8), 2, normalize="both")
