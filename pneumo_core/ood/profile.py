"""The out-of-distribution profile of an artifact (``ood.safetensors``).

Each image is described by what a radiograph's layout and texture look like at low resolution:
a 32x32 thumbnail of its grey levels and a 16x16 map of its local edge strength (the absolute
Laplacian). A probabilistic PCA model of those 1,280 numbers (sklearn's ``PCA``; Tipping & Bishop
1999), fitted on the training images, gives each image a Mahalanobis-type distance: how far it
lies from the training X-rays, inside the subspace they span and off it. Photos, documents,
noise, patterns, CT/MR slices and radiographs of other body parts all sit far off it. A blank
image (no contrast in the thumbnail) is always out of distribution.

``ood_score`` is the percentile of that distance among held-out validation X-rays (0-100: 99.9
means more unusual than 99.9% of them); an image is flagged above the ``flag_percentile``
(default 99.5, so about 0.5% of in-distribution X-rays are flagged). The score does not depend
on the inference backend, and costs well under a millisecond.

Stored as plain arrays in safetensors (never pickled); scoring is numpy only, so serving does
not import scikit-learn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

OOD_FILE = "ood.safetensors"
_THUMB, _EDGE = 32, 16


def describe(resized: np.ndarray) -> np.ndarray:
    """The 1,280 layout-and-texture numbers of one HxW uint8 image (any size)."""
    img = np.ascontiguousarray(resized)
    thumb = cv2.resize(img, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    mid = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    edges = np.abs(cv2.Laplacian(mid, cv2.CV_32F, ksize=3)) / 255.0
    edge_map = cv2.resize(edges, (_EDGE, _EDGE), interpolation=cv2.INTER_AREA)
    return np.concatenate([thumb.ravel(), edge_map.ravel()])


@dataclass
class OodProfile:
    """PPCA of standardised descriptions, and the validation quantiles of its distance."""

    center: np.ndarray  # (D,) mean of the training descriptions
    scale: np.ndarray  # (D,) their standard deviation (per number)
    components: np.ndarray  # (K, D) orthonormal principal axes
    variances: np.ndarray  # (K,) variance along each axis
    noise_variance: float  # variance off the subspace, per dimension
    quantiles: np.ndarray  # (1001,) distance quantiles of the validation images, 0.1% steps
    flag_percentile: float = 99.5

    def distance(self, descriptions: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance under the PPCA covariance (Woodbury form), per row."""
        d = (np.atleast_2d(descriptions) - self.center) / self.scale
        proj = d @ self.components.T
        s2 = self.noise_variance
        shrink = (self.variances - s2) / (s2 * self.variances)
        return (d * d).sum(1) / s2 - (proj * proj * shrink).sum(1)

    def score(self, resized: np.ndarray) -> float:
        """``ood_score`` of one image: the percentile of its distance among validation X-rays
        (100 for an image without contrast: it shows no anatomy, whatever its grey level)."""
        description = describe(resized)
        if np.ptp(description[:_THUMB ** 2]) < 8 / 255:
            return 100.0
        dist = self.distance(description)[0]
        rank = np.searchsorted(self.quantiles, dist, side="right") / len(self.quantiles)
        return float(min(100.0, rank * 100))

    def flagged(self, score: float) -> bool:
        return score > self.flag_percentile

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        arrays = {k: np.ascontiguousarray(getattr(self, k), dtype=np.float32)
                  for k in ("center", "scale", "components", "variances", "quantiles")}
        arrays["noise_variance"] = np.array([self.noise_variance], np.float32)
        arrays["flag_percentile"] = np.array([self.flag_percentile], np.float32)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(arrays, str(tmp))
        tmp.chmod(0o644)  # safetensors creates it owner-only; artifacts are shared
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "OodProfile":
        from safetensors.numpy import load_file

        a = load_file(str(path))
        profile = cls(center=a["center"], scale=a["scale"], components=a["components"], variances=a["variances"],
                      noise_variance=float(a["noise_variance"][0]), quantiles=a["quantiles"],
                      flag_percentile=float(a["flag_percentile"][0]))
        k, d = profile.components.shape
        if (profile.center.shape != (d,) or profile.scale.shape != (d,) or profile.variances.shape != (k,)
                or d != _THUMB ** 2 + _EDGE ** 2 or len(profile.quantiles) < 2
                or not all(np.isfinite(v).all() for v in a.values()) or not profile.noise_variance > 0
                or not (profile.scale > 0).all()):
            raise ValueError("inconsistent or non-finite arrays")
        return profile


def fit_profile(train: np.ndarray, held_out: np.ndarray, components: int = 48,
                flag_percentile: float = 99.5) -> OodProfile:
    """Fit on ``train`` images (N, H, W) uint8; take the distance quantiles from ``held_out``
    images, which the PPCA has not seen (a fit's own images look closer than new ones)."""
    from sklearn.decomposition import PCA

    if len(train) < 20 or len(held_out) < 20:
        raise ValueError(f"an OOD profile needs at least 20 training and 20 validation images "
                         f"(got {len(train)} and {len(held_out)})")
    x = np.stack([describe(im) for im in train])
    center, scale = x.mean(0), x.std(0) + 1e-3
    z = (x - center) / scale
    pca = PCA(n_components=min(components, len(train) - 1), svd_solver="full").fit(z)
    profile = OodProfile(center=center, scale=scale, components=pca.components_, variances=pca.explained_variance_,
                         noise_variance=float(max(pca.noise_variance_, 1e-6)), quantiles=np.zeros(2),
                         flag_percentile=flag_percentile)
    dist = profile.distance(np.stack([describe(im) for im in held_out]))
    profile.quantiles = np.quantile(dist, np.linspace(0, 1, 1001)).astype(np.float32)
    return profile
