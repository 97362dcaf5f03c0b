"""Monitoring of served traffic: prevalence re-estimation and the predictive values it implies."""
from pneumo_core.monitoring.prevalence import em_prevalence, predictive_values
from pneumo_core.monitoring.traffic import TrafficMonitor

__all__ = ["TrafficMonitor", "em_prevalence", "predictive_values"]
