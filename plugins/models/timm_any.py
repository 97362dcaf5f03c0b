"""Model plugin ``timm``: any timm architecture by name (``params.arch``)."""
from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pneumo_core import ModelSpec, hookimpl
from plugins.models.timm_build import create_timm_model, last_feature_layer


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arch: str = Field(description="timm architecture name, e.g. efficientnet_b0, densenet121, convnext_nano.")
    pretrained: Union[bool, str] = Field(False, description="False, true (timm hub), or a local weights file.")
    drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra timm.create_model kwargs.")

    @field_validator("arch")
    @classmethod
    def _known(cls, v: str) -> str:
        import timm

        if not timm.is_model(v):
            raise ValueError(f"unknown timm architecture {v!r} (see timm.list_models())")
        return v


def build(params: TimmParams, in_chans: int, num_classes: int, load_pretrained: bool):
    return create_timm_model(params.arch, params.pretrained if load_pretrained else False, in_chans, num_classes,
                             drop_rate=params.drop_rate, drop_path_rate=params.drop_path_rate, **params.kwargs)


@hookimpl
def pneumo_models():
    return [ModelSpec(name="timm", build=build, cam_layer=last_feature_layer, params_model=TimmParams,
                      description="any timm architecture by name (params.arch)")]
