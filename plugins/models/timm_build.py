"""Building timm networks for the model plugins ``timm`` and ``resnet18`` (a helper module: no hooks)."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from pneumo_core import PluginError


def _load_local_weights(model, path: str, in_chans: int) -> None:
    """Load a local state dict (safetensors, or a torch file with weights_only=True)."""
    import torch
    from timm.models import adapt_input_conv

    file = Path(path)
    if not file.is_file():
        raise PluginError(f"pretrained weights file not found: {file}")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file))
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    own = model.state_dict()
    for key, value in list(state.items()):
        if key not in own:
            del state[key]
        elif value.ndim == 4 and value.shape[1] != own[key].shape[1] and own[key].shape[1] == in_chans:
            state[key] = adapt_input_conv(in_chans, value)
        elif value.shape != own[key].shape:  # e.g. a 1000-class ImageNet head
            del state[key]
    model.load_state_dict(state, strict=False)


def create_timm_model(arch: str, pretrained: Union[bool, str], in_chans: int, num_classes: int, **kwargs):
    """Build a timm model; ``pretrained`` is False, True (hub) or a local weights path."""
    import timm

    model = timm.create_model(arch, pretrained=pretrained is True, in_chans=in_chans,
                              num_classes=num_classes, **kwargs)
    if isinstance(pretrained, str):
        _load_local_weights(model, pretrained, in_chans)
    return model


def last_feature_layer(model):
    """The module producing the last feature map (Grad-CAM target), from timm's feature_info."""
    info = getattr(model, "feature_info", None)
    if info:
        return model.get_submodule(info[-1]["module"])
    raise PluginError(f"{type(model).__name__} has no feature_info; cannot pick a Grad-CAM layer")
