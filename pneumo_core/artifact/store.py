"""Write and load model artifacts; loading verifies every checksum and never unpickles.

Layout: ``model.safetensors``, ``model.json`` (metadata), ``SHA256SUMS`` (``sha256sum -c``
format, covering weights, metadata and ``model.onnx`` when present), ``report.md`` and plots.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pneumo_core.artifact.ensemble import Ensemble, TestTimeAugmentation, unwrap_tta
from pneumo_core.artifact.sites import SiteProfile, parse_sites
from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.errors import ArtifactError
from pneumo_core.hashing import sha256_file
from pneumo_core.ood.profile import OOD_FILE, OodProfile

FORMAT = "pneumo-artifact/1"
WEIGHTS, META, SUMS = "model.safetensors", "model.json", "SHA256SUMS"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}  # backend -> file in the artifact
LOADED_FILES = (WEIGHTS, META, *ONNX_FILES.values(), OOD_FILE)  # what loading may read: each must be checksummed


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    params: dict[str, Any]
    in_chans: int = 1


class EnsembleMember(BaseModel):
    """One network of an ensemble artifact: its model plugin and params, and its own temperature."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: ModelRef
    temperature: float = Field(gt=0)
    source: str = ""  # name and version of the artifact it came from


class EnsembleMeta(BaseModel):
    members: list[EnsembleMember] = Field(min_length=1)


class ArtifactMeta(BaseModel):
    """The parts of ``model.json`` that loading relies on (everything else is kept as is).

    Values are range-checked: a threshold outside (0, 1), a temperature that is not a positive
    finite number, or classes that disagree with ``positive_class`` are refused at load.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    format: str
    name: str
    version: str
    model: ModelRef
    classes: list[str] = Field(min_length=2, max_length=2)
    positive_class: Optional[str] = None
    preprocessing: Preprocessing
    threshold: float = Field(gt=0, lt=1)
    calibration: dict[str, Any]
    plugins: list[str] = []
    ensemble: Optional[EnsembleMeta] = None  # several networks under one model.json (model.name "ensemble")

    @model_validator(mode="after")
    def _consistent(self) -> "ArtifactMeta":
        if len(set(self.classes)) != 2 or not all(c.strip() for c in self.classes):
            raise ValueError(f"classes must be two distinct names, not {self.classes}")
        if self.positive_class is not None and self.positive_class != self.classes[1]:
            raise ValueError(f"positive_class {self.positive_class!r} must be the second class; classes are "
                             f"{self.classes} (swapped?)")
        t = self.calibration.get("temperature", 1.0)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"calibration.temperature must be a positive finite number, not {t!r}")
        return self


@dataclass
class Artifact:
    folder: Path
    meta: ArtifactMeta
    raw: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    sites: dict[str, SiteProfile] = field(default_factory=dict)  # per-site operating points

    @property
    def temperature(self) -> float:
        return float(self.meta.calibration.get("temperature", 1.0))


def write_checksums(folder: Path) -> None:
    """(Re)write SHA256SUMS over the files loading depends on."""
    names = [n for n in LOADED_FILES if (folder / n).exists()]
    lines = "".join(f"{sha256_file(folder / n)}  {n}\n" for n in names)
    tmp = folder / f".{SUMS}.tmp"
    tmp.write_text(lines)
    os.replace(tmp, folder / SUMS)


def write_artifact(folder: Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                   weights_dtype: Optional[torch.dtype] = None) -> Path:
    """Write weights (optionally cast, e.g. to float16) and metadata, then checksums."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if weights_dtype is not None and v.is_floating_point():
            v = v.to(weights_dtype)
        tensors[k] = v.contiguous()
    save_file(tensors, str(folder / f".{WEIGHTS}.tmp"), metadata={"format": FORMAT})
    os.chmod(folder / f".{WEIGHTS}.tmp", 0o644)  # safetensors creates it owner-only; artifacts are shared
    os.replace(folder / f".{WEIGHTS}.tmp", folder / WEIGHTS)
    meta = {"format": FORMAT, **meta}
    ArtifactMeta.model_validate(meta)  # fail at write time, not at serving time
    (folder / META).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    write_checksums(folder)
    return folder


def verify_checksums(folder: Path) -> None:
    sums = folder / SUMS
    if not sums.is_file():
        raise ArtifactError(f"{folder}: no {SUMS}; this is not a complete pneumo artifact")
    lines = [line for line in sums.read_text().splitlines() if line.strip()]
    listed = {line.partition("  ")[2] for line in lines}
    for required in (WEIGHTS, META):
        if required not in listed:
            raise ArtifactError(f"{folder}: {SUMS} does not cover {required}; the artifact was altered")
    unlisted = [n for n in LOADED_FILES if n not in listed and (folder / n).exists()]
    if unlisted:
        raise ArtifactError(f"{folder}: {', '.join(unlisted)} not covered by {SUMS}: the file was added after the "
                            "artifact was written. Delete it, or re-create it with `pneumo export`.")
    for line in lines:
        digest, _, name = line.partition("  ")
        path = folder / name
        if "/" in name or not path.is_file():
            raise ArtifactError(f"{folder}: {name} is listed in {SUMS} but missing")
        if sha256_file(path) != digest:
            raise ArtifactError(f"{path}: checksum mismatch — the file is truncated, corrupt or was modified. "
                                "Re-copy the artifact or retrain it.")


def load_artifact(folder: str | Path, verify: bool = True) -> Artifact:
    """Load metadata and weights. Raises ArtifactError for anything missing, corrupt or tampered."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: model artifact folder not found")
    for name in (WEIGHTS, META):
        if not (folder / name).is_file():
            raise ArtifactError(f"{folder}: missing {name}; this is not a complete pneumo artifact")
    if verify:
        verify_checksums(folder)
    try:
        raw = json.loads((folder / META).read_text(encoding="utf-8"))
        meta = ArtifactMeta.model_validate(raw)
        sites = parse_sites(raw)
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(f"{folder / META}: invalid metadata: {exc}") from None
    if meta.format != FORMAT:
        raise ArtifactError(f"{folder}: format {meta.format!r}, this pneumo reads {FORMAT!r}")
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{folder / WEIGHTS}: unreadable weights: {exc}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ArtifactError(f"{folder / WEIGHTS}: non-finite weights (NaN or infinity) in {', '.join(bad[:5])}"
                            f"{' ...' if len(bad) > 5 else ''}; retrain or re-copy the artifact")
    return Artifact(folder, meta, raw, {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                    sites)


def update_metadata(artifact: Artifact, key: str, value: Any) -> None:
    """Set one top-level key of the artifact's ``model.json`` (atomically) and rewrite SHA256SUMS."""
    raw = {**artifact.raw, key: value}
    ArtifactMeta.model_validate(raw)
    tmp = artifact.folder / f".{META}.tmp"
    tmp.write_text(json.dumps(raw, indent=2, default=str), encoding="utf-8")
    tmp.replace(artifact.folder / META)
    write_checksums(artifact.folder)
    artifact.raw = raw


def load_ood(artifact: Artifact) -> Optional[OodProfile]:
    """The artifact's out-of-distribution profile (checksummed with it), or None without one."""
    path = artifact.folder / OOD_FILE
    if not path.is_file():
        return None
    try:
        return OodProfile.load(path)
    except Exception as exc:  # safetensors or shape errors: one clear message
        raise ArtifactError(f"{path}: unreadable out-of-distribution profile ({exc}); refit it with "
                            f"`pneumo ood fit {artifact.folder} --data CONFIG`") from None


def repack_artifact(src: str | Path, dst: str | Path, weights_dtype: torch.dtype = torch.float16) -> Path:
    """Copy an artifact with its weights cast (e.g. to float16 for distribution), re-checksummed."""
    import shutil

    art = load_artifact(src)
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise ArtifactError(f"{dst} exists and is not empty; choose a new folder for the copy")
    if dst.resolve().is_relative_to(art.folder.resolve()):
        raise ArtifactError(f"{dst} is inside the source artifact {art.folder}; choose a folder outside it")
    if dst.exists():
        dst.rmdir()
    shutil.copytree(art.folder, dst, ignore=shutil.ignore_patterns("model*.onnx", "eval-*", ".*"))
    raw = {k: v for k, v in art.raw.items() if k != "format"}
    raw["weights_dtype"] = str(weights_dtype).replace("torch.", "")
    write_artifact(dst, art.state_dict, raw, weights_dtype=weights_dtype)
    return dst


def input_difference(classes: Sequence[str], prep: Preprocessing,
                     artifact: Artifact) -> Optional[tuple[str, Any, Any]]:
    """How ``artifact`` reads other input than a model of ``classes`` and ``prep``, as (what,
    ours, theirs) for the first difference among classes, image size, channels and
    normalisation; None when it reads the same (test-time views aside)."""
    theirs = artifact.meta.preprocessing
    for what, a, b in (("classes", list(classes), artifact.meta.classes),
                       ("image size", prep.image_size, theirs.image_size),
                       ("input channels", prep.in_chans, theirs.in_chans),
                       ("normalisation", (prep.normalize, prep.mean, prep.std),
                        (theirs.normalize, theirs.mean, theirs.std))):
        if a != b:
            return what, a, b
    return None


def artifact_plugins(artifact: Artifact) -> list[str]:
    """The config-listed plugins an artifact needs. Loading one runs its code, so only modules an
    installed package registers as ``pneumo`` plugins (entry points) load without asking; any
    other module name, and any ``.py`` file, needs ``PNEUMO_TRUST_ARTIFACT_PLUGINS=1``."""
    from pneumo_core.plugin_manager import registered_plugin_modules

    registered = registered_plugin_modules()
    untrusted = [p for p in artifact.meta.plugins if p not in registered]
    if untrusted and os.environ.get("PNEUMO_TRUST_ARTIFACT_PLUGINS") != "1":
        raise ArtifactError(f"{artifact.folder}: the model needs plugins {untrusted}, which no installed package "
                            "registers as a pneumo plugin. Loading them runs their code: install them as a "
                            "package with a `pneumo` entry point, or set PNEUMO_TRUST_ARTIFACT_PLUGINS=1 if you "
                            "trust this artifact.")
    return list(artifact.meta.plugins)


def _build_network(pm, ref: ModelRef, num_classes: int) -> torch.nn.Module:
    spec = pm.model(ref.name)
    return spec.build(spec.params_model.model_validate(ref.params), ref.in_chans, num_classes, False)


def build_model(artifact: Artifact, pm=None) -> torch.nn.Module:
    """Rebuild the network through its model plugin(s) and load the artifact's weights (eval mode).

    An ensemble artifact gives an :class:`~pneumo_core.artifact.ensemble.Ensemble`, and one with
    test-time views in its preprocessing is wrapped in ``TestTimeAugmentation``: either way one
    module that maps inputs to two-class logits.
    """
    from pneumo_core.plugin_manager import get_plugin_manager

    pm = pm or get_plugin_manager(artifact_plugins(artifact))
    meta, num_classes = artifact.meta, len(artifact.meta.classes)
    if meta.ensemble is not None:
        model = Ensemble([_build_network(pm, m.model, num_classes) for m in meta.ensemble.members],
                         [m.temperature for m in meta.ensemble.members])
    else:
        model = _build_network(pm, meta.model, num_classes)
    try:
        model.load_state_dict(artifact.state_dict, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{artifact.folder}: weights do not fit model "
                            f"'{artifact.meta.model.name}': {str(exc)[:300]}") from None
    if meta.preprocessing.tta:
        model = TestTimeAugmentation(model, meta.preprocessing.tta)
    return model.eval()


def cam_layers(artifact: Artifact, model: torch.nn.Module, pm) -> list[torch.nn.Module]:
    """The layers Grad-CAM hooks in a model from :func:`build_model`: one per network (their maps
    are averaged), found inside any test-time views."""
    net, _ = unwrap_tta(model)
    if artifact.meta.ensemble is not None:
        return [pm.model(m.model.name).cam_layer(member)
                for m, member in zip(artifact.meta.ensemble.members, net.members)]
    return [pm.model(artifact.meta.model.name).cam_layer(net)]
