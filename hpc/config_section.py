"""The config's ``hpc`` section, owned by this package and registered as a plugin (entry point
``hpc_config``) through ``pneumo_config_sections``: the core knows nothing of Slurm."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import ConfigSectionSpec, hookimpl


class HpcSection(BaseModel):
    """Slurm defaults for `pneumo hpc render|submit`; command-line options override each."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: str = Field("04:00:00", description="Slurm time limit, e.g. 04:00:00 or 2-00:00:00.")
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(4, ge=1)
    mem: Optional[str] = Field("16G", description="Memory per node, e.g. 32G.")
    job_name: Optional[str] = Field(None, description="Slurm job name (default: the experiment name).")
    output_dir: str = Field("runs", description="Where run directories and Slurm logs go.")
    activate: Optional[str] = Field(None, description="Shell line that activates the environment, "
                                    "e.g. 'source .venv/bin/activate' or 'conda activate pneumo'.")
    requeue: bool = True
    signal_seconds: int = Field(120, ge=10, description="Seconds before the time limit to send USR1.")
    sweep: list[list[str]] = Field(default_factory=list, description="Array job: one list of "
                                   "--set overrides per task.")
    extra_sbatch: list[str] = Field(default_factory=list, description="Extra #SBATCH lines.")



@hookimpl
def pneumo_config_sections():
    return [ConfigSectionSpec(name="hpc", model=HpcSection, description="Slurm job defaults (pneumo hpc)")]
