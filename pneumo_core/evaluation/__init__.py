"""Evaluation: metrics with confidence intervals, threshold choice, calibration, plots, report."""
from pneumo_core.evaluation.calibration import apply_temperature, fit_temperature
from pneumo_core.evaluation.metrics import binary_metrics, bootstrap_auc_ci
from pneumo_core.evaluation.threshold import choose_threshold

__all__ = ["apply_temperature", "binary_metrics", "bootstrap_auc_ci", "choose_threshold", "fit_temperature"]
