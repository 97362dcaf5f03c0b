"""The plugin module named by the entry point: hook implementations only.

pneumo calls ``pneumo_models()`` once when it builds its registry and gets a list of
``ModelSpec`` records back. A config then selects the model with ``model.name: tinycnn`` and
passes ``model.params``, which pneumo validates with ``params_model`` before calling ``build``.
"""
from __future__ import annotations

from pneumo_core import ModelSpec, hookimpl

from pneumo_tinycnn.model import TinyCNN, TinyCNNParams


def build(params: TinyCNNParams, in_chans: int, num_classes: int, load_pretrained: bool) -> TinyCNN:
    """Called by pneumo with validated params, the input channels, the number of classes, and
    whether to load pretrained weights (TinyCNN has none, so it ignores the flag)."""
    return TinyCNN(in_chans, num_classes, width=params.width, depth=params.depth, dropout=params.dropout)


def cam_layer(model: TinyCNN):
    """The layer Grad-CAM hooks: the last conv block."""
    return model.blocks[-1]


@hookimpl
def pneumo_models():
    return [ModelSpec(name="tinycnn", build=build, cam_layer=cam_layer, params_model=TinyCNNParams,
                      description="small custom CNN (example third-party plugin)")]
