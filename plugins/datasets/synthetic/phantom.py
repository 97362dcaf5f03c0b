"""Chest-X-ray-like phantoms: a deterministic, pure-numpy (+ cv2) stand-in for real radiographs.

``render_phantom(label, size, seed)`` draws a frontal (PA) chest radiograph look-alike:
dark air around the body, soft-tissue thorax, shoulders and neck, two dark lung fields cut by
diaphragm domes, a bright mediastinum with the spine and a heart shadow bulging to the image's
right (the patient's left), clavicles, 9 posterior ribs per side and faint vascular markings.
Geometry, exposure, contrast, gamma, noise and blur vary with ``seed``.

``label=1`` (PNEUMONIA) adds 1-3 soft, irregular consolidation patches inside a lung field.
Every image is then windowed to a random mean and spread drawn independently of the label, so
global brightness says nothing about the class: a model has to find the opacity.

The anatomy, exposure and noise depend on ``seed`` only, so ``render_phantom(0, n, s)`` and
``render_phantom(1, n, s)`` show the same "patient" without and with pneumonia.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

NORMAL, PNEUMONIA = 0, 1

_F = np.float32


def render_phantom(label: int, size: int, seed: int) -> np.ndarray:
    """Return a ``size`` x ``size`` uint8 phantom radiograph; ``label`` 0 = NORMAL, 1 = PNEUMONIA.

    Deterministic: the same ``(label, size, seed)`` gives an identical array.
    """
    return render_phantom_with_masks(label, size, seed)[0]


def render_phantom_with_masks(label: int, size: int,
                              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image uint8, lung mask bool, opacity mask bool)``, all ``size`` x ``size``.

    The opacity mask is empty for NORMAL; for PNEUMONIA it marks where consolidation was drawn
    (useful to check that a saliency map points at the right place).
    """
    if label not in (NORMAL, PNEUMONIA):
        raise ValueError(f"label must be 0 (NORMAL) or 1 (PNEUMONIA), got {label!r}")
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    rng = np.random.default_rng(_entropy(seed, 0x5EED))
    geo = _Geometry(rng)

    # pixel grid in [-1, 1], then into "patient" coordinates (undo shift, rotation, scale)
    g = ((np.arange(size, dtype=_F) + 0.5) / size * 2 - 1).astype(_F)
    x, y = np.meshgrid(g, g)
    c, s = math.cos(geo.rot), math.sin(geo.rot)
    xs, ys = x - geo.tx, y - geo.ty
    u = ((c * xs + s * ys) / geo.scale).astype(_F)
    v = ((-s * xs + c * ys) / geo.scale).astype(_F)
    px = 2.0 / size / geo.scale  # one pixel in patient units, for anti-aliased edges

    medi = _mediastinum(u, v, geo, px)
    lungs, lung_r, lung_l = _lungs(u, v, geo, px, medi)
    density = _anatomy(u, v, geo, lungs, medi, px, size, rng)

    opacity = np.zeros_like(density)
    if label == PNEUMONIA:
        orng = np.random.default_rng(_entropy(seed, 0x0BAC))
        opacity = _opacities(u, v, geo, lung_r, lung_l, size, orng)
        density += opacity * geo.lung_air * orng.uniform(0.75, 1.05)

    img = _expose(density, size, rng)
    return img, lungs > 0.5, opacity > 0.25


def _entropy(seed: int, stream: int) -> list[int]:
    """Seed material for one random stream; any Python int (also negative or huge) works."""
    seed = int(seed)
    return [abs(seed), int(seed < 0), stream]


# --------------------------------------------------------------------------- geometry
class _Geometry:
    """Per-seed anatomy and pose parameters (patient coordinates, roughly [-1, 1])."""

    def __init__(self, rng: np.random.Generator) -> None:
        r = rng.uniform
        self.rot = math.radians(r(-4.0, 4.0))
        self.scale = r(0.88, 1.04)
        self.tx, self.ty = r(-0.05, 0.05), r(-0.06, 0.06)
        self.body_w = r(0.98, 1.12)                   # half width of the thorax
        self.lung_w = r(0.34, 0.40)                   # half width of a lung field
        self.lung_h = r(0.70, 0.82)                   # half height of a lung field
        self.lung_x = r(0.43, 0.49)                   # distance of lung centres from the midline
        self.lung_y = r(-0.12, -0.02)
        self.dome_r = r(0.36, 0.48)                   # right hemidiaphragm (image left) apex height
        self.dome_l = self.dome_r + r(0.02, 0.09)     # left one sits a little lower
        self.dome_k = r(1.4, 2.2)                     # dome curvature
        self.heart_w = r(0.26, 0.36)                  # how far the heart bulges past heart_x
        self.heart_h = r(0.24, 0.32)
        self.heart_x = r(0.08, 0.14)
        self.heart_y = self.dome_l - r(0.06, 0.14)
        self.medi_w = r(0.12, 0.16)
        self.shoulder = r(0.3, 0.6)                   # slope of the shoulders
        self.rib_gap = r(0.13, 0.155)
        self.rib_top = r(-0.86, -0.78)
        self.rib_curve = r(0.95, 1.25)
        self.rib_w = r(0.034, 0.044)
        self.lung_air = r(0.48, 0.56)                 # how much darker air makes a lung field


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 1 where ``d`` > width/2, 0 where ``d`` < -width/2 (``d`` = signed inside-ness)."""
    return np.clip(d / width + 0.5, 0.0, 1.0).astype(_F)


def _ellipse(u, v, cx, cy, rx, ry, edge, p: float = 2.0):
    """Soft membership of a (super)ellipse; ``edge`` is the softness in normalised radius."""
    du, dv = np.abs(u - cx) / rx, np.abs(v - cy) / ry
    if p == 2.0:
        r = np.sqrt(du * du + dv * dv)
    else:
        r = (du ** p + dv ** p) ** (1.0 / p)
    return _ramp(1.0 - r, edge)


def _mediastinum(u, v, geo: _Geometry, px: float) -> np.ndarray:
    """Soft mask of the mediastinum with the heart shadow and the aortic knob.

    Its image-right border (the patient's left) bulges out over the lower half into the heart,
    ending at the left dome; the image-left border bulges a little at the right atrium.
    """
    edge = max(0.06, 2 * px)
    base = geo.medi_w + 0.03 * v
    # a rounded lower half down to the dome, a slanted upper border up to the aortic knob
    low = np.sqrt(np.clip(1.0 - ((v - geo.heart_y) / geo.heart_h) ** 2, 0.0, None))
    high = np.clip(1.0 - (geo.heart_y - v) / (1.6 * geo.heart_h), 0.0, None) ** 0.7
    right = np.maximum(base, geo.heart_x + geo.heart_w * np.where(v > geo.heart_y, low, high))
    knob_v = geo.heart_y - 1.5 * geo.heart_h - 0.12
    right = right + 0.07 * np.exp(-(((v - knob_v) / 0.08) ** 2))
    left = base + 0.08 * np.sqrt(np.clip(1.0 - ((v - geo.heart_y - 0.05) / geo.heart_h) ** 2, 0, None))
    return _ramp(right - u, edge) * _ramp(u + left, edge)


def _lungs(u, v, geo: _Geometry, px: float, medi: np.ndarray):
    """Soft masks of both lung fields (right lung on the image's left), and their union."""
    edge = max(0.05, 2 * px)
    out = []
    for side, dome in ((-1, geo.dome_r), (1, geo.dome_l)):
        cx = side * geo.lung_x
        # rounded apex, broad base: stretch the superellipse's lower half
        vv = np.where(v > geo.lung_y, (v - geo.lung_y) * 0.8 + geo.lung_y, v)
        shape = _ellipse(u, vv, cx, geo.lung_y, geo.lung_w, geo.lung_h, edge, p=2.4)
        # diaphragm dome: lung above a parabola peaking near the lung's middle
        dome_v = dome + geo.dome_k * (u - cx * 0.85) ** 2
        below = _ramp(dome_v - v, max(0.03, 2 * px))
        # the medial edge hugs the mediastinum and the heart
        out.append(shape * below * _ramp(side * u, 0.1) * (1.0 - medi))
    right, left = out
    return np.maximum(right, left), right, left


def _rib_bands(w: np.ndarray, centres: np.ndarray, widths: np.ndarray, edge: float) -> np.ndarray:
    """Soft bands of half-width ``widths[k]`` around ``w == centres[k]`` (``centres`` ascending).

    One pass for all ribs: ``w`` is the distance along the rib family's common curve.
    """
    idx = np.rint(np.interp(w, centres, np.arange(len(centres), dtype=np.float64))).astype(np.intp)
    dist = np.abs(w - centres[idx])
    return _ramp(widths[idx] - dist, edge)


def _lowpass(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a ``cells`` x ``cells`` grid upsampled to ``size``."""
    small = rng.standard_normal((cells, cells)).astype(_F)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _anatomy(u, v, geo: _Geometry, lungs, medi, px: float, size: int, rng) -> np.ndarray:
    """Attenuation map (higher = brighter on the film) of everything but pneumonia."""
    edge = max(0.05, 3 * px)
    # trunk: wider at the shoulders, neck on top, shoulders sloping down to the arms
    half_w = geo.body_w * (1.0 - 0.1 * v - 0.08 * np.clip(v, 0.0, None) ** 2)
    slope = -1.1 + geo.shoulder * np.clip(np.abs(u) - 0.22, 0.0, None) ** 1.5
    body = _ramp(half_w - np.abs(u), edge) * _ramp(v - slope, edge)

    # soft tissue, thicker towards the middle
    d = body * (0.44 + 0.12 * _ramp(0.85 - np.abs(u) / geo.body_w, 0.7))

    # abdomen below the diaphragm, stomach gas bubble under the left dome
    dome_mid = 0.5 * (geo.dome_r + geo.dome_l)
    abdomen = _ramp(v - (dome_mid + 1.0 * u * u), 0.1) * body
    d += 0.1 * abdomen
    d -= 0.12 * _ellipse(u, v, geo.lung_x * 0.8, geo.dome_l + 0.13, 0.11, 0.06, 0.6)

    # lungs: air lets X-rays through, so they are dark; thicker tissue at apices and edges
    air = geo.lung_air * (1.0 - 0.25 * _ramp(-0.45 - v, 0.5) - 0.2 * _ramp(np.abs(u) - 0.6, 0.4))
    d -= air * lungs

    # mediastinum with the heart, spine faintly through it, trachea as a dark column
    d += 0.1 * medi * _ramp(dome_mid + 0.15 - v, 0.1) * body
    vert = 0.5 + 0.5 * np.cos((v - geo.rib_top) * (2 * np.pi / geo.rib_gap))
    d += _ramp(0.055 - np.abs(u), 0.02) * body * (0.04 + 0.05 * vert)
    trachea = _ramp(0.035 - np.abs(u - 0.01 * v), 0.02) * _ramp(-0.3 - v, 0.08)
    d -= 0.1 * trachea * body

    # clavicles: gentle S-curves from the sternum to the shoulders
    for side in (-1, 1):
        t = side * u
        cy = -0.72 - 0.14 * (t - 0.1) + 0.3 * (t - 0.35) ** 2
        clav = _ramp(0.03 - np.abs(v - cy), max(0.02, 2 * px)) * _ramp(t - 0.07, 0.04)
        clav *= _ramp(0.75 - t, 0.05)
        d += 0.12 * clav * body

    # ribs: posterior ribs arch up from the spine and curve down to the chest wall;
    # anterior ribs run from the chest wall down towards the sternum, fainter
    t = np.abs(u) - 0.05
    lateral = _ramp(geo.body_w - 0.07 - np.abs(u), 0.08) * _ramp(t, 0.04)
    wedge = max(0.015, 1.5 * px)
    k = np.arange(9)
    v0 = geo.rib_top + k * geo.rib_gap * (1 + 0.02 * k) + rng.uniform(-0.012, 0.012, size=9)
    widths = geo.rib_w * (1 + 0.05 * k)
    ribs = _rib_bands(v + 0.5 * t - geo.rib_curve * t * t, v0, widths, wedge)
    anterior = _rib_bands(v - 0.1 - 0.5 * (geo.body_w - np.abs(u)), v0, widths * 0.9, wedge)
    ribs += 0.4 * anterior * _ramp(np.abs(u) - 0.3, 0.15)
    d += 0.1 * np.minimum(ribs, 1.4) * lateral * (0.3 + 0.7 * lungs) * body

    # vascular markings: smooth texture, strongest near the hila, fading to the periphery
    hilum = np.exp(-((np.abs(u) - 0.22) ** 2 / 0.06 + (v - 0.02) ** 2 / 0.12)).astype(_F)
    texture = np.abs(_lowpass(rng, size, 18)) * 0.5 + np.abs(_lowpass(rng, size, 40)) * 0.5
    d += lungs * (0.06 * texture + 0.1 * hilum * (0.4 + 0.6 * texture))
    return d.astype(_F)


def _opacities(u, v, geo: _Geometry, lung_r, lung_l, size: int, rng) -> np.ndarray:
    """1-3 soft, irregular consolidation patches inside lung fields, in [0, 1]."""
    out = np.zeros_like(u)
    for _ in range(int(rng.integers(1, 4))):
        side = int(rng.choice((-1, 1)))
        mask = lung_r if side < 0 else lung_l
        dome = geo.dome_r if side < 0 else geo.dome_l
        cx = side * geo.lung_x + rng.uniform(-0.5, 0.5) * geo.lung_w
        # mostly middle and lower zones, never below the diaphragm
        top, bottom = geo.lung_y - 0.5 * geo.lung_h, dome - 0.05
        cy = top + (bottom - top) * rng.beta(2.2, 1.4)
        sx, sy = rng.uniform(0.08, 0.17), rng.uniform(0.08, 0.2)
        a = rng.uniform(0, np.pi)
        ca, sa = math.cos(a), math.sin(a)
        du, dv = u - cx, v - cy
        q = ((ca * du + sa * dv) / sx) ** 2 + ((-sa * du + ca * dv) / sy) ** 2
        env = np.exp(-0.5 * q)
        rough = _lowpass(rng, size, 10) * 0.35 + _lowpass(rng, size, 20) * 0.2
        patch = np.clip((env * (1.0 + rough) - 0.25) / 0.45, 0.0, 1.0)
        out = np.maximum(out, patch * rng.uniform(0.6, 1.0) * np.clip(mask * 1.3, 0, 1))
    k = max(1, int(round(size / 48))) * 2 + 1
    return cv2.GaussianBlur(out.astype(_F), (k, k), 0)


# --------------------------------------------------------------------------- film

def _expose(density: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Density to 8-bit film: film response, gamma, blur, noise, label-blind windowing."""
    img = 1.0 - np.exp(-rng.uniform(1.2, 2.0) * np.clip(density, 0.0, None))
    img = img / max(float(img.max()), 1e-6)
    img = np.power(img, rng.uniform(0.75, 1.35)).astype(_F)
    sigma = rng.uniform(0.3, 0.8) * size / 224
    if sigma > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0.0, rng.uniform(0.008, 0.025), img.shape).astype(_F)
    # window to a random mean and spread, independent of the label
    mean, std = float(img.mean()), float(img.std()) + 1e-6
    img = (img - mean) * (rng.uniform(0.16, 0.22) / std) + rng.uniform(0.42, 0.56)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
