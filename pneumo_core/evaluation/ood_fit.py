"""Fit an artifact's out-of-distribution profile: at the end of training, or afterwards with
``pneumo ood fit ARTIFACT --data CONFIG`` (the bundled model included)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pneumo_core.ood.profile import OOD_FILE, OodProfile, fit_profile


def write_profile(folder: Path, train: np.ndarray, held_out: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fit on ``train`` images, take quantiles from the first ``held_out`` split, write
    ``ood.safetensors`` into ``folder``; return the summary that goes into model.json (the
    fraction of each held-out split that is flagged)."""
    from pneumo_core.errors import PneumoError

    first = next(iter(held_out))
    try:
        profile = fit_profile(train, held_out[first])
    except ValueError as exc:
        raise PneumoError(f"out-of-distribution profile: {exc}") from None
    profile.save(folder / OOD_FILE)
    flagged = {name: round(float(np.mean([profile.flagged(profile.score(im)) for im in images])), 4)
               for name, images in held_out.items() if len(images)}
    return {"method": "ppca-thumbnail-edges", "file": OOD_FILE, "flag_percentile": profile.flag_percentile,
            "components": int(profile.components.shape[0]), "fitted_on": {"train": int(len(train))},
            "quantiles_from": first, "flagged_fraction": flagged}


def fit_artifact(artifact_dir: str | Path, data_config: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Add (or replace) the profile of an existing artifact, drawn from the splits it was trained on."""
    from pneumo_core.artifact.store import artifact_plugins, load_artifact, update_metadata
    from pneumo_core.config.loader import load_config
    from pneumo_core.data.cache import decode_all, fingerprint
    from pneumo_core.data.splits import config_splits
    from pneumo_core.errors import PneumoError
    from pneumo_core.plugin_manager import get_plugin_manager

    art = load_artifact(artifact_dir)
    rc = load_config(data_config, overrides, pm=get_plugin_manager(artifact_plugins(art)))
    data = rc.config.data
    table = rc.pm.dataset(data.name).build(rc.data_params)
    splits = config_splits(table, rc.config)
    if art.raw.get("data", {}).get("fingerprint") not in (None, fingerprint(splits, table.classes)):
        raise PneumoError(f"{art.folder} was trained on other splits than {data_config} draws (data fingerprints "
                          "differ): give the config and --set overrides it was trained with, so that the profile's "
                          "quantiles come from images the model did not train on")
    size = art.meta.preprocessing.image_size
    names = [n for n in dict.fromkeys([data.select_on, "val", "temporal"]) if splits[n]]
    if not splits["train"] or not names:
        raise PneumoError(f"{data_config}: the dataset gives no training or validation images to fit the profile on")
    held_out = {n: decode_all(splits[n], size, f"decode {n}") for n in names}
    summary = write_profile(art.folder, decode_all(splits["train"], size, "decode train"), held_out)
    update_metadata(art, "ood", summary)
    OodProfile.load(art.folder / OOD_FILE)  # what serving will read
    return summary
