"""Model plugin ``resnet18``: timm's ResNet-18, 1 input channel by default."""
from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import ModelSpec, hookimpl
from plugins.models.timm_build import create_timm_model, last_feature_layer


class ResNet18Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pretrained: Union[bool, str] = Field(False, description="False (default), true (timm hub, needs "
                                         "internet), or a path to a .safetensors/.pth state dict.")
    drop_rate: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="Stochastic depth.")


def build(params: ResNet18Params, in_chans: int, num_classes: int, load_pretrained: bool):
    return create_timm_model("resnet18", params.pretrained if load_pretrained else False, in_chans, num_classes,
                             drop_rate=params.drop_rate, drop_path_rate=params.drop_path_rate)


@hookimpl
def pneumo_models():
    return [ModelSpec(name="resnet18", build=build, cam_layer=last_feature_layer,
                      params_model=ResNet18Params, description="ResNet-18 (timm), trained from scratch by default")]
