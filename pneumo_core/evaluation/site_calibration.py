"""``pneumo calibrate ARTIFACT DATA --site NAME``: fit a site's threshold and temperature on a
small labelled local sample, with an honest bootstrap CI, and store it in the artifact."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from pneumo_core.artifact.sites import SITE_NAME, profile_digest
from pneumo_core.errors import PneumoError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".dcm", ".dicom"}
MIN_PER_CLASS = 5
MIN_FOR_TEMPERATURE = 20  # per class: below this the artifact's own temperature is kept


def labelled_images(data: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """(paths, labels) from a folder with one subfolder per class (``NORMAL/``, ``PNEUMONIA/``)
    or a CSV manifest with ``path`` and ``label`` columns (a class name or 0/1; paths relative
    to the CSV's folder)."""
    paths, labels = [], []
    if data.is_dir():
        for label, cls in enumerate(classes):
            folder = next((d for d in data.iterdir() if d.is_dir() and d.name.upper() == cls.upper()), None)
            found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder else []
            paths += found
            labels += [label] * len(found)
    elif data.is_file() and data.suffix.lower() == ".csv":
        with open(data, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise PneumoError(f"{data}: a site manifest needs 'path' and 'label' columns")
            for row in reader:
                value = row["label"].strip()
                names = {c.upper(): i for i, c in enumerate(classes)}
                if value.upper() in names:
                    label = names[value.upper()]
                elif value in ("0", "1"):
                    label = int(value)
                else:
                    raise PneumoError(f"{data}: label {value!r} is neither {' nor '.join(classes)} nor 0/1")
                paths.append((data.parent / row["path"]).resolve())
                labels.append(label)
    else:
        raise PneumoError(f"{data}: give a folder with {'/ and '.join(classes)}/ subfolders or a CSV manifest")
    y = np.array(labels, dtype=int)
    counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
    if min(counts.values()) < MIN_PER_CLASS:
        raise PneumoError(f"{data}: {counts}; a site needs at least {MIN_PER_CLASS} images of each class "
                          "(50 or more of each gives a usable confidence interval)")
    return paths, y


def out_of_bag_ci(y: np.ndarray, p: np.ndarray, fit, n: int, seed: int = 0) -> dict[str, list[float]]:
    """95% CIs of sensitivity and specificity of the whole procedure: in each bootstrap resample
    the threshold is refitted (``fit(y, p)``) and scored on the images left out of it, so the
    interval includes the noise of fitting on a small sample."""
    rng = np.random.default_rng(seed)
    sens, spec = [], []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        out = np.setdiff1d(np.arange(len(y)), idx)
        if len(np.unique(y[idx])) < 2 or len(np.unique(y[out])) < 2:
            continue
        t = fit(y[idx], p[idx])
        pred, yo = p[out] >= t, y[out]
        sens.append(float(pred[yo == 1].mean()))
        spec.append(float((~pred[yo == 0]).mean()))
    if not sens:
        return {"sensitivity": [float("nan")] * 2, "specificity": [float("nan")] * 2}
    return {"sensitivity": [float(v) for v in np.percentile(sens, [2.5, 97.5])],
            "specificity": [float(v) for v in np.percentile(spec, [2.5, 97.5])]}


def calibrate_site(artifact_dir: str | Path, data: str | Path, site: str, method: str = "youden",
                   target_sensitivity: Optional[float] = None, bootstrap: int = 1000,
                   backend: str = "auto") -> dict[str, Any]:
    """Fit and store ``site``'s operating point; returns the stored profile."""
    from pneumo_core.artifact.store import update_metadata
    from pneumo_core.data.preprocess import preprocess
    from pneumo_core.evaluation.calibration import fit_temperature
    from pneumo_core.evaluation.threshold import choose_threshold
    from pneumo_core.imaging import ImageError
    from pneumo_core.inference import Predictor
    from pneumo_core.inference.calibration import apply_temperature

    if not SITE_NAME.match(site) or site == "default":
        raise PneumoError(f"site name {site!r}: use 1-64 letters, digits, '.', '_' or '-' ('default' names the "
                          "model's own operating point)")
    if target_sensitivity is not None:
        if not 0 < target_sensitivity < 1:
            raise PneumoError(f"--target-sensitivity must be between 0 and 1, not {target_sensitivity}")
        method = "sensitivity"
    predictor = Predictor(artifact_dir, backend=backend, batching=False, warmup=False)
    art, prep = predictor.artifact, predictor.prep
    paths, y = labelled_images(Path(data), art.meta.classes)
    inputs, keep = [], []
    for i, path in enumerate(paths):
        try:
            inputs.append(preprocess(predictor.decode(path.read_bytes(), str(path)).pixels, prep))
            keep.append(i)
        except (ImageError, OSError) as exc:
            raise PneumoError(f"{path}: {exc}; remove or replace it and run again") from None
    logits = np.concatenate([predictor.logits(np.stack(inputs[i:i + 32])) for i in range(0, len(inputs), 32)])
    counts = {c: int((y == k).sum()) for k, c in enumerate(art.meta.classes)}
    own_temperature = min(counts.values()) >= MIN_FOR_TEMPERATURE
    temperature = fit_temperature(logits, y) if own_temperature else art.temperature
    p = apply_temperature(logits, temperature)

    def fit(yy: np.ndarray, pp: np.ndarray) -> float:
        return choose_threshold(yy, pp, method, target_sensitivity or 0.95)

    threshold = fit(y, p)
    pred = p >= threshold
    previous = art.sites.get(site)
    profile: dict[str, Any] = {
        "name": site, "version": previous.version + 1 if previous else 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threshold": float(threshold), "temperature": float(temperature),
        "temperature_from": "site" if own_temperature else f"model (fewer than {MIN_FOR_TEMPERATURE} per class)",
        "method": "youden" if method == "youden" else f"sensitivity>={target_sensitivity}",
        "images": counts, "data": str(data),
        "apparent": {"sensitivity": float(pred[y == 1].mean()), "specificity": float((~pred[y == 0]).mean())},
        "ci95": out_of_bag_ci(y, p, fit, bootstrap),
        "ci_method": f"{bootstrap} bootstrap resamples, threshold refitted in each, scored out of bag",
    }
    profile["sha256"] = profile_digest(profile)
    update_metadata(art, "sites", {**(art.raw.get("sites") or {}), site: profile})
    _write_card_section(art.folder / "report.md", profile)
    return profile


def _write_card_section(report: Path, prof: dict[str, Any]) -> None:
    """Add (or replace) the site's section of the model card."""
    start, end = f"<!-- site:{prof['name']} -->", f"<!-- /site:{prof['name']} -->"
    ci = prof["ci95"]
    section = (f"{start}\n## Site {prof['name']} (profile version {prof['version']}, {prof['created']})\n\n"
               f"Threshold {prof['threshold']:.4f} ({prof['method']}), temperature {prof['temperature']:.3f} "
               f"(from the {prof['temperature_from']}), fitted on {prof['images']} images from `{prof['data']}`.\n\n"
               f"| | at this site (apparent) | 95% CI (refitted, out of bag) |\n|---|---|---|\n"
               f"| Sensitivity | {prof['apparent']['sensitivity']:.3f} | {ci['sensitivity'][0]:.3f}–{ci['sensitivity'][1]:.3f} |\n"
               f"| Specificity | {prof['apparent']['specificity']:.3f} | {ci['specificity'][0]:.3f}–{ci['specificity'][1]:.3f} |\n"
               f"\nUse it with `pneumo predict --site {prof['name']}`, the REST form field or `X-Pneumo-Site` "
               f"header `site`, or RunPod `site`. Profile sha256 `{prof['sha256'][:16]}…`.\n{end}\n")
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    if start in text and end in text:
        text = text[:text.index(start)] + section.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    report.write_text(text, encoding="utf-8")
