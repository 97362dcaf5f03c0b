"""Preprocessing: the one definition shared by training, evaluation and serving."""
from __future__ import annotations

import numpy as np
import pytest

from pneumo_core.data.preprocess import Preprocessing, preprocess, resize_square, to_input


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(20, 230, (300, 260), dtype=np.uint8)


def test_image_normalisation_standardises_each_image(image):
    x = preprocess(image, Preprocessing(image_size=64))
    assert x.shape == (1, 64, 64) and x.dtype == np.float32
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-5
    ref = resize_square(image, 64).astype(np.float64) / 255
    np.testing.assert_allclose(x[0], (ref - ref.mean()) / ref.std(), atol=1e-5)


def test_exposure_and_contrast_do_not_change_the_input(image):
    side = min(image.shape)
    prep = Preprocessing(image_size=side)  # no resizing, so no rounding in between
    square = image[:side, :side] // 2 * 2  # even grey levels: halving them is exact
    darker = square // 2 + 10  # half the contrast, a different exposure
    np.testing.assert_allclose(preprocess(square, prep), preprocess(darker, prep), atol=1e-5)


def test_uniform_image_stays_finite():
    x = to_input(np.full((32, 32), 77, np.uint8), Preprocessing(image_size=32))
    assert np.isfinite(x).all() and not x.any()


def test_fixed_normalisation_and_channels(image):
    prep = Preprocessing(image_size=32, normalize="fixed", mean=0.4, std=0.2, in_chans=3)
    resized = resize_square(image, 32)
    x = to_input(resized, prep)
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[2], (resized / 255 - 0.4) / 0.2, atol=1e-5)


def test_non_contiguous_input(image):
    view = image[::-1, ::2][:64, :64]
    x = to_input(view, Preprocessing(image_size=64))
    np.testing.assert_allclose(x, to_input(view.copy(), Preprocessing(image_size=64)))
