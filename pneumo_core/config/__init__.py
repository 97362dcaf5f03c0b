"""Experiment configuration: schema and loader."""
from pneumo_core.config.loader import (ResolvedConfig, apply_overrides, json_schema, load_config,
                                       read_yaml, resolve)
from pneumo_core.config.schema import ExperimentConfig

__all__ = ["ExperimentConfig", "ResolvedConfig", "apply_overrides", "json_schema", "load_config",
           "read_yaml", "resolve"]
