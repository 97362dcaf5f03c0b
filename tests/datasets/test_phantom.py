"""The chest-X-ray phantom generator: deterministic, fast, and the class is in the opacity."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

from plugins.datasets.synthetic.phantom import render_phantom, render_phantom_with_masks


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize("size", [32, 64, 224])
def test_shape_dtype_and_determinism(label, size):
    a = render_phantom(label, size, 123)
    b = render_phantom(label, size, 123)
    assert a.shape == (size, size) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert a.std() > 20  # an image, not a flat field


def test_seeds_and_labels_differ():
    base = render_phantom(0, 64, 1)
    assert not np.array_equal(base, render_phantom(0, 64, 2))
    assert not np.array_equal(base, render_phantom(1, 64, 1))
    # large and negative seeds are fine and distinct
    assert not np.array_equal(render_phantom(0, 64, -1), render_phantom(0, 64, 1))
    assert not np.array_equal(render_phantom(0, 64, 2**40), render_phantom(0, 64, 0))


def test_bad_arguments():
    with pytest.raises(ValueError):
        render_phantom(2, 64, 0)
    with pytest.raises(ValueError):
        render_phantom(0, 4, 0)


def test_masks():
    img, lungs, opacity = render_phantom_with_masks(1, 64, 5)
    assert lungs.shape == opacity.shape == img.shape and lungs.dtype == bool
    assert 0.15 < lungs.mean() < 0.6
    assert opacity.any() and (opacity & lungs).sum() > 0.5 * opacity.sum()
    assert not render_phantom_with_masks(0, 64, 5)[2].any()


def test_opacity_brightens_the_lungs():
    diffs = []
    for seed in range(50):
        normal, lungs, _ = render_phantom_with_masks(0, 64, seed)
        pneumonia = render_phantom(1, 64, seed)  # same anatomy, plus opacities
        diffs.append(pneumonia[lungs].mean() - normal[lungs].mean())
    assert np.mean(diffs) > 1.5


def _dataset(n: int, size: int, offset: int):
    labels = np.arange(n) % 2
    imgs = np.stack([render_phantom(int(lab), size, offset + i) for i, lab in enumerate(labels)])
    return imgs, labels


def test_global_brightness_does_not_give_the_class_away():
    imgs, labels = _dataset(200, 64, 10_000)
    means = imgs.reshape(len(imgs), -1).mean(axis=1)
    best = max(max(np.mean((means > t) == labels), np.mean((means <= t) == labels))
               for t in np.unique(means))
    assert best < 0.75  # the best threshold, chosen on the same samples, is still poor


def test_learnable_by_a_linear_model():
    from sklearn.linear_model import LogisticRegression

    imgs, labels = _dataset(400, 64, 20_000)
    x = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA) for im in imgs])
    x = x.reshape(len(x), -1) / 255.0
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(x[:300], labels[:300])
    assert clf.score(x[300:], labels[300:]) > 0.75
