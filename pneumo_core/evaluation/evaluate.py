"""Evaluate a model artifact on a dataset split with the artifact's own threshold and calibration."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pneumo_core.config.loader import load_config
from pneumo_core.data.cache import decode_all
from pneumo_core.data.splits import config_splits
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation.metrics import binary_metrics
from pneumo_core.evaluation.plots import evaluation_plots
from pneumo_core.evaluation.report import metrics_table


def evaluate_artifact(artifact_dir: str | Path, data_config: str | Path, split: str = "test",
                      out_dir: Optional[Path] = None, overrides: Sequence[str] = (),
                      bootstrap: int = 1000, backend: str = "auto") -> dict:
    """Metrics (AUC with 95% CI, accuracy, sensitivity, ...) of the artifact on ``split`` of the
    config's dataset; writes metrics.json, plots and report.md to ``out_dir``.

    ``train``, ``val`` and ``temporal`` are drawn as training drew them from the same config
    (``temporal`` only when the config has one); ``test`` is the dataset's own test split; ``all``
    every image.
    """
    from pneumo_core.inference import Predictor

    predictor = Predictor(artifact_dir, backend=backend, batching=False, warmup=False)
    rc = load_config(data_config, overrides, pm=predictor.pm)
    table = rc.pm.dataset(rc.config.data.name).build(rc.data_params)
    if list(table.classes) != list(predictor.info.classes):
        raise PneumoError(f"dataset classes {list(table.classes)} differ from the model's {predictor.info.classes}")
    if split == "all":
        samples = list(table.samples)
    else:
        data = rc.config.data
        if split == "temporal" and not data.temporal_fraction:
            raise PneumoError(f"{data_config} has no temporal split (data.temporal_fraction is 0): give the config "
                              "the model was trained with; a temporal split drawn now would hold training images")
        splits = config_splits(table, rc.config) if split in ("train", "val", "temporal") else None
        samples = splits[split] if splits else [s for s in table.samples if s.split == "test"]
    if not samples:
        raise PneumoError(f"the dataset has no '{split}' images; choose --split all or another split")
    prep = predictor.prep
    images = decode_all(samples, prep.image_size, f"decode {split}")
    from pneumo_core.data.preprocess import to_input

    probs = np.concatenate([predictor.probabilities(np.stack([to_input(im, prep) for im in images[i:i + 64]]))
                            for i in range(0, len(images), 64)])
    y = np.array([s.label for s in samples])
    metrics = binary_metrics(y, probs, predictor.info.threshold, bootstrap)
    out = Path(out_dir or Path(artifact_dir) / f"eval-{split}")
    out.mkdir(parents=True, exist_ok=True)
    plots = evaluation_plots(out, y, probs, predictor.info.threshold, table.classes, split, f"{split} ({table.description})")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "report.md").write_text(
        f"# Evaluation of {predictor.info.name} {predictor.info.version}\n\n"
        f"Data: {table.description}, split `{split}`. Threshold {predictor.info.threshold:.4f} "
        f"(chosen on validation data at training time).\n\n{metrics_table({split: metrics})}\n\n"
        + "\n".join(f"![{p.name}]({p.name})" for p in plots) + "\n")
    return metrics
