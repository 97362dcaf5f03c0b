"""Dataset plugin ``synthetic``: chest-X-ray-like phantoms, deterministic by seed.

Pneumonia phantoms carry opacities in a lung field. Learnable at 64 px in seconds: for smoke
tests, CI and demos without any real data.
"""
from __future__ import annotations

from functools import partial

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import DatasetSpec, Sample, SampleTable, hookimpl
from plugins.datasets.synthetic.phantom import render_phantom


class SyntheticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_train: int = Field(200, ge=4)
    n_val: int = Field(60, ge=0)
    n_test: int = Field(60, ge=0)
    size: int = Field(128, ge=32, le=1024, description="Rendered side in pixels.")
    pneumonia_fraction: float = Field(0.5, gt=0, lt=1)
    seed: int = 0


def build(params: SyntheticParams) -> SampleTable:
    samples = []
    offset = params.seed * 1_000_003
    for split, n in (("train", params.n_train), ("val", params.n_val), ("test", params.n_test)):
        n_pos = round(n * params.pneumonia_fraction)
        for i in range(n):
            label = 1 if i < n_pos else 0
            seed = offset + len(samples)
            samples.append(Sample(key=f"{split}/{i}", label=label, group=f"phantom-{seed}",
                                  load=partial(render_phantom, label, params.size, seed), split=split,
                                  order=("phantom", float(seed))))
    return SampleTable(classes=("NORMAL", "PNEUMONIA"), samples=tuple(samples),
                       description=f"synthetic phantoms (seed {params.seed})")


@hookimpl
def pneumo_datasets():
    return [DatasetSpec(name="synthetic", build=build, params_model=SyntheticParams,
                        description="chest-X-ray-like phantoms; pneumonia adds opacities")]
