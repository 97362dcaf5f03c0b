"""pneumo core: hookspecs, plugin manager, config, training, evaluation, artifacts, inference.

Plugins import only the names exported here.
"""
from pneumo_core.errors import ArtifactError, ConfigError, PluginError, PneumoError
from pneumo_core.plugin_manager import hookimpl
from pneumo_core.records import (AugmentationSpec, DatasetSpec, HealthCheck, ModelSpec, NoParams,
                                 RunInfo, Sample, SampleTable)

__version__ = "0.1.0"
BUNDLED_ARTIFACT = "models/pneumo-resnet18-kermany"  # the default model, relative to the repository root

__all__ = [
    "BUNDLED_ARTIFACT", "ArtifactError", "AugmentationSpec", "ConfigError", "DatasetSpec", "HealthCheck", "ModelSpec",
    "NoParams", "PluginError", "PneumoError", "RunInfo", "Sample", "SampleTable", "hookimpl",
]
