"""Model artifacts: a folder with weights (safetensors), metadata, checksums, report and plots."""
from pneumo_core.artifact.store import (Artifact, ArtifactMeta, build_model, load_artifact, repack_artifact,
                                        write_artifact)

__all__ = ["Artifact", "ArtifactMeta", "build_model", "load_artifact", "repack_artifact", "write_artifact"]
