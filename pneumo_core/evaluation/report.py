"""The model card (``report.md``) written into every artifact."""
from __future__ import annotations

from pathlib import Path
from typing import Any

_ROWS = [("auc", "ROC AUC"), ("accuracy", "Accuracy"), ("sensitivity", "Sensitivity"),
         ("specificity", "Specificity"), ("ppv", "PPV"), ("npv", "NPV"), ("f1", "F1"),
         ("brier", "Brier score"), ("ece", "ECE")]


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def metrics_table(metrics: dict[str, dict[str, float]]) -> str:
    """A Markdown table with one column per split."""
    splits = list(metrics)
    lines = ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for key, label in _ROWS:
        cells = []
        for s in splits:
            m = metrics[s]
            cell = _fmt(m.get(key, float("nan")))
            if key == "auc" and m.get("auc_ci_low") == m.get("auc_ci_low"):  # not NaN
                cell += f" ({m['auc_ci_low']:.3f}–{m['auc_ci_high']:.3f})"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| Images (pneumonia) | " + " | ".join(f"{metrics[s]['n']} ({metrics[s]['n_positive']})" for s in splits) + " |")
    return "\n".join(lines)


def write_report(folder: Path, meta: dict[str, Any], plots: list[str]) -> Path:
    """Write ``report.md``: intended use, data and split, metrics with CIs, limitations."""
    data, train = meta["data"], meta["training"]
    selected = meta.get("selected_on", "val")
    if meta.get("ensemble"):
        members = meta["ensemble"]["members"]
        built = (f"- An ensemble of {len(members)} networks ({', '.join(m['source'] for m in members)}), "
                 f"each calibrated by its own temperature; their probabilities are averaged, then the "
                 f"ensemble's temperature and threshold apply.")
    else:
        built = (f"- Trained {train['epochs_run']} epochs ({train['precision']}, {train['device']}"
                 f"{', EMA of weights ' + str(train['ema_decay']) if train.get('ema_decay') else ''}), "
                 f"best epoch {train['best_epoch']} by ROC AUC on the `{selected}` split.")
        teacher = train.get("distilled_from")
        if teacher:
            built += (f" Distilled from `{teacher['teacher']}` ({teacher['members']} network(s), "
                      f"{teacher['tta_views'] or 'no'} test-time views; weights sha256 "
                      f"`{teacher['weights_sha256'][:12]}…`): {teacher['weight']:.0%} of the loss came from its "
                      "calibrated probabilities on each augmented batch, the rest from the labels.")
    tta = meta["preprocessing"].get("tta") or []
    if tta:
        built += (f" Test-time augmentation: probabilities averaged over {len(tta)} views (shifts and zooms) "
                  "wherever the artifact is served.")
    lines = [
        f"# Model card: {meta['name']}",
        "",
        "> **Not for clinical use.** A research model; it has not been validated for diagnosis.",
        "",
        "## Intended use",
        "Research and education on pediatric chest radiographs: flags radiographs that look like "
        "pneumonia (bacterial or viral) versus normal. Not a substitute for a radiologist; not "
        "validated on adults, other sites, devices or projections.",
        "",
        "## Model",
        f"- Architecture: `{meta['model']['name']}` with params `{meta['model']['params']}`; "
        f"{meta['model']['num_parameters']:,} parameters.",
        f"- Input: {meta['preprocessing']['image_size']} px square, grayscale, "
        f"per-{meta['preprocessing']['normalize']} normalisation.",
        f"- Operating threshold {meta['threshold']:.4f} on P({meta['classes'][1]}), chosen on "
        f"the `{selected}` split by `{meta['threshold_method']}`; temperature "
        f"{meta['calibration']['temperature']:.3f}, fitted on the `{selected}` split.",
        "",
        "## Data and split",
        f"- Source: {data['description']} (fingerprint `{data['fingerprint'][:16]}…`).",
        f"- Images per split: {data['counts']}. Every split is grouped by patient: no patient is in "
        "two splits. `val` is a random, label-stratified share of the patients; `temporal` holds "
        "the earliest patients of each acquisition series (lowest file-name numbers), standing in "
        "for images from another period.",
        built,
        f"- So the `{selected}` split chose the {'epoch, the ' if not meta.get('ensemble') else ''}temperature "
        "and the threshold: its figures below are optimistic; the other splits' are not.",
        "",
        "## Metrics",
        "95% confidence intervals for AUC by bootstrap. Metrics at the operating threshold, with "
        "calibrated probabilities.",
        "",
        metrics_table(meta["metrics"]),
        "",
        "## Limitations",
        "- Validation images come from the same hospital as training; performance on other "
        "populations is expected to be lower (the Kermany test split is known to be harder).",
        "- Pediatric anterior-posterior radiographs only; labels are image-level, no localisation.",
        "- Grad-CAM heatmaps show where the model looked, not where disease is.",
        "",
        "## Plots",
        *[f"![{p}]({p})" for p in plots],
        "",
    ]
    path = folder / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
