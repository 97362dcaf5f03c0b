"""After training: calibrate, choose the threshold on validation, evaluate, write the artifact."""
from __future__ import annotations

import platform
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from pneumo_core.artifact.store import write_artifact
from pneumo_core.evaluation.ood_fit import write_profile
from pneumo_core.config.loader import ResolvedConfig
from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.evaluation import apply_temperature, binary_metrics, choose_threshold, fit_temperature
from pneumo_core.evaluation.plots import evaluation_plots, learning_curves
from pneumo_core.evaluation.report import write_report
from pneumo_core.evaluation.threshold import threshold_method_label
from pneumo_core.training.validation import predict_logits


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("pneumo", "torch", "timm", "albumentations", "numpy", "safetensors", "scikit-learn"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def finalize(rc: ResolvedConfig, out: Path, *, model: torch.nn.Module, prep: Preprocessing,
             device: torch.device, precision: str, val_sets: dict[str, tuple[np.ndarray, np.ndarray]],
             test: Optional[tuple[np.ndarray, np.ndarray]], history: list[dict], table, splits,
             data_fp: str, training: dict[str, Any], train_images: Optional[np.ndarray] = None) -> Path:
    """Write the complete artifact folder ``out`` (replacing an older one atomically).

    ``val_sets`` maps each validation split to (images, labels), the selecting one first: it
    fits the temperature and the threshold; every split is reported. With ``train_images`` the
    artifact gets an out-of-distribution profile fitted on them (quantiles from that split).
    """
    cfg, tc = rc.config, rc.config.train
    select = next(iter(val_sets))
    logits = {name: predict_logits(model, images, prep, device, precision) for name, (images, _) in val_sets.items()}
    if test is not None:
        logits["test"] = predict_logits(model, test[0], prep, device, precision)
    labels = {name: y for name, (_, y) in val_sets.items()} | ({"test": test[1]} if test is not None else {})
    temperature = fit_temperature(logits[select], labels[select]) if tc.calibrate else 1.0
    probs = {name: (labels[name], apply_temperature(lg, temperature)) for name, lg in logits.items()}
    threshold = choose_threshold(labels[select], probs[select][1], tc.threshold.method,
                                 tc.threshold.target_sensitivity, tc.threshold.value)
    metrics = {name: binary_metrics(y, p, threshold, tc.bootstrap, tc.seed) for name, (y, p) in probs.items()}

    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    plots = []
    for split, (y, p) in probs.items():
        plots += [p_.name for p_ in evaluation_plots(staging, y, p, threshold, table.classes, split, split)]
    if history:
        plots.append(learning_curves(staging, history).name)
    meta = {
        "name": cfg.name,
        "version": time.strftime("%Y%m%d-%H%M%S"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"name": cfg.model.name, "params": rc.model_params.model_dump(mode="json"),
                  "in_chans": cfg.model.in_chans, "num_parameters": sum(p.numel() for p in model.parameters())},
        "classes": list(table.classes),
        "positive_class": table.classes[1],
        "preprocessing": prep.model_dump(),
        "threshold": threshold,
        "selected_on": select,
        "threshold_method": threshold_method_label(tc.threshold.method, tc.threshold.target_sensitivity),
        "calibration": {"method": "temperature" if tc.calibrate else "none", "temperature": temperature},
        "metrics": metrics,
        "data": {"fingerprint": data_fp, "description": table.description,
                 "counts": {k: len(v) for k, v in splits.items() if v}},
        "training": {**training, "history": history},
        "config": cfg.model_dump(mode="json"),
        "plugins": cfg.plugins,
        "versions": library_versions(),
    }
    if train_images is not None and len(train_images) >= 20 and len(val_sets[select][0]) >= 20:
        meta["ood"] = write_profile(staging, train_images, {n: imgs for n, (imgs, _) in val_sets.items()})
    write_artifact(staging, model.state_dict(), meta)
    write_report(staging, meta, plots)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
