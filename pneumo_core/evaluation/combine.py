"""``pneumo ensemble``: combine trained artifacts (and test-time views) into one artifact whose
temperature and threshold are fitted on validation data for the combination."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from pneumo_core.artifact.store import Artifact, artifact_plugins, build_model, input_difference, load_artifact, \
    write_artifact
from pneumo_core.config.loader import load_config
from pneumo_core.data.cache import decode_all, fingerprint
from pneumo_core.data.preprocess import TtaView
from pneumo_core.data.splits import config_splits
from pneumo_core.errors import ArtifactError, PneumoError
from pneumo_core.evaluation.calibration import apply_temperature, fit_temperature
from pneumo_core.evaluation.metrics import binary_metrics
from pneumo_core.evaluation.plots import evaluation_plots
from pneumo_core.evaluation.report import write_report
from pneumo_core.evaluation.threshold import choose_threshold, threshold_method_label
from pneumo_core.artifact.ensemble import Ensemble, TestTimeAugmentation
from pneumo_core.data.preprocess import Preprocessing, to_input
from pneumo_core.plugin_manager import get_plugin_manager


@torch.no_grad()
def _logits(model: torch.nn.Module, images: np.ndarray, prep: Preprocessing, batch: int = 32) -> np.ndarray:
    out = [model(torch.from_numpy(np.stack([to_input(im, prep) for im in images[i:i + batch]]))).float().numpy()
           for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def _compatible(arts: Sequence[Artifact]) -> None:
    first = arts[0]
    for art in arts[1:]:
        difference = input_difference(first.meta.classes, first.meta.preprocessing, art)
        if difference is not None:
            what, a, b = difference
            raise ArtifactError(f"{art.folder}: {what} {b} differ from {first.folder}'s {a}; an ensemble's "
                                "members must read the same input")
    for art in arts:
        if art.meta.ensemble is not None or art.meta.preprocessing.tta:
            raise ArtifactError(f"{art.folder} is already an ensemble or uses test-time views; combine single models")


def build_ensemble(members: Sequence[str | Path], out: str | Path, data_config: str | Path,
                   overrides: Sequence[str] = (), tta: Sequence[TtaView] = (), bootstrap: int = 1000) -> Path:
    """Write an artifact at ``out`` that averages the members' calibrated probabilities (over
    ``tta`` views when given), with temperature and threshold fitted on the validation split the
    data config selects (``data.select_on``), as training would draw it."""
    out = Path(out)
    if out.exists():
        raise PneumoError(f"{out} exists; choose a new folder for the ensemble")
    arts = [load_artifact(m) for m in members]
    _compatible(arts)
    plugins = sorted({p for a in arts for p in artifact_plugins(a)})  # the trust check of each member
    pm = get_plugin_manager(plugins)
    nets = [build_model(a, pm) for a in arts]
    model: torch.nn.Module = Ensemble(nets, [a.temperature for a in arts])
    if tta:
        model = TestTimeAugmentation(model, tta)
    model.eval()

    rc = load_config(data_config, overrides, pm=pm)
    data, tc = rc.config.data, rc.config.train
    table = rc.pm.dataset(data.name).build(rc.data_params)
    splits = config_splits(table, rc.config)
    drawn = fingerprint(splits, table.classes)
    for art in arts:  # fitted on another split, the threshold would be fitted partly on training images
        if art.raw.get("data", {}).get("fingerprint") != drawn:
            raise PneumoError(f"{art.folder} was trained on other splits than {data_config} draws (data "
                              "fingerprints differ): give the data config and --set overrides its members were "
                              "trained with, so that the ensemble is fitted on images none of them trained on")
    prep = arts[0].meta.preprocessing.model_copy(update={"tta": tuple(tta)})
    names = [n for n in dict.fromkeys([data.select_on, "val", "temporal"]) if splits[n]]
    labels, logits = {}, {}
    for name in names:
        images = decode_all(splits[name], prep.image_size, f"decode {name}")
        labels[name] = np.array([s.label for s in splits[name]])
        logits[name] = _logits(model, images, prep)
    select = names[0]
    temperature = fit_temperature(logits[select], labels[select]) if tc.calibrate else 1.0
    probs = {n: apply_temperature(logits[n], temperature) for n in names}
    threshold = choose_threshold(labels[select], probs[select], tc.threshold.method, tc.threshold.target_sensitivity,
                                 tc.threshold.value)
    metrics = {n: binary_metrics(labels[n], probs[n], threshold, bootstrap, tc.seed) for n in names}

    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    plots = [p.name for n in names
             for p in evaluation_plots(staging, labels[n], probs[n], threshold, table.classes, n, n)]
    first = arts[0].raw
    meta = {
        "name": out.name, "version": time.strftime("%Y%m%d-%H%M%S"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {"name": "ensemble", "params": {}, "in_chans": prep.in_chans,
                  "num_parameters": sum(p.numel() for p in model.parameters())},
        "ensemble": {"members": [{"model": {k: v for k, v in a.raw["model"].items() if k != "num_parameters"},
                                  "temperature": a.temperature, "source": f"{a.meta.name} {a.meta.version}"}
                                 for a in arts]},
        "classes": list(first["classes"]), "positive_class": first["classes"][1],
        "preprocessing": prep.model_dump(mode="json"),
        "threshold": threshold, "selected_on": select,
        "threshold_method": threshold_method_label(tc.threshold.method, tc.threshold.target_sensitivity),
        "calibration": {"method": "temperature" if tc.calibrate else "none", "temperature": temperature},
        "metrics": metrics,
        "data": {"fingerprint": drawn, "description": table.description,
                 "counts": {k: len(v) for k, v in splits.items() if v}},
        "training": {"epochs_run": 0, "best_epoch": 0, "precision": "fp32", "device": "cpu",
                     "members": [f"{a.meta.name} {a.meta.version}" for a in arts], "history": []},
        "config": rc.config.model_dump(mode="json"), "plugins": plugins,
        "versions": first.get("versions", {}),
    }
    inner = model.model if isinstance(model, TestTimeAugmentation) else model
    write_artifact(staging, inner.state_dict(), meta)
    write_report(staging, meta, plots)
    staging.rename(out)
    return out


def parse_views(spec: Optional[str]) -> tuple[TtaView, ...]:
    """``--tta``: "default" (identity, +/-4% shifts, +/-6% zoom), "none", or views as
    "dx,dy,scale;dx,dy,scale"."""
    from pneumo_core.artifact.ensemble import DEFAULT_TTA

    if not spec or spec == "none":
        return ()
    if spec == "default":
        return DEFAULT_TTA
    views = []
    for part in spec.split(";"):
        try:
            dx, dy, scale = (float(v) for v in part.split(","))
            views.append(TtaView(dx=dx, dy=dy, scale=scale))
        except ValueError as exc:
            raise PneumoError(f"--tta {part!r}: expected dx,dy,scale (e.g. 0.04,0,1), shifts within 0.25 and "
                              f"scales 0.75-1.25 ({exc})") from None
    return tuple(views)
