"""pneumo core: hookspecs, plugin manager, config, training, evaluation, artifacts, inference.

Plugins import only the names exported here.
"""
from pneumo_core.errors import ArtifactError, ConfigError, PluginError, PneumoError
from pneumo_core.plugin_manager import hookimpl
from pneumo_core.records import (Augment, AugmentationBuilder, AugmentationSpec, ConfigSectionSpec, DatasetBuilder,
                                 DatasetSpec, HealthCheck, LoggerBuilder, LoggerSpec, ModelBuilder, ModelSpec, NoParams,
                                 Record, Reseedable, RunInfo, RunLogger, Sample, SampleTable)

__version__ = "0.1.0"
BUNDLED_ARTIFACT = "models/pneumo-resnet18-kermany"  # the default model, relative to the repository root

__all__ = [
    "BUNDLED_ARTIFACT", "ArtifactError", "Augment", "AugmentationBuilder", "AugmentationSpec", "ConfigError",
    "ConfigSectionSpec", "DatasetBuilder", "DatasetSpec", "HealthCheck", "LoggerBuilder", "LoggerSpec", "ModelBuilder",
    "ModelSpec", "NoParams", "PluginError", "PneumoError", "Record", "Reseedable", "RunInfo", "RunLogger", "Sample", "SampleTable", "hookimpl", "load_image",
]


def __getattr__(name: str):
    """``load_image`` (pneumo's one image decoder, for dataset plugins), imported on first use so
    that ``import pneumo_core`` stays light."""
    if name == "load_image":
        from pneumo_core.imaging import load_image

        return load_image
    raise AttributeError(f"module 'pneumo_core' has no attribute {name!r}")
