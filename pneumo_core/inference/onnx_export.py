"""ONNX export: ``pneumo export ARTIFACT --format onnx`` writes ``model.onnx`` beside the weights;
``onnx_model_for`` gives the serving backends an export on demand, cached outside the artifact."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from pneumo_core.artifact.store import ONNX_FILES, SUMS, WEIGHTS, Artifact, build_model, load_artifact, write_checksums
from pneumo_core.data.preprocess import Preprocessing
from pneumo_core.errors import PneumoError
from pneumo_core.hashing import sha256_file

OPSET = 18
log = logging.getLogger("pneumo.export")


def write_onnx(model: torch.nn.Module, prep: Preprocessing, out: Path, opset: int = OPSET) -> Path:
    """Export ``model`` (eval mode) with a dynamic batch axis to ``out``, atomically."""
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx"):  # their INFO lines drown the CLI output
        logging.getLogger(noisy).setLevel(logging.WARNING)
    dummy = torch.zeros(2, prep.in_chans, prep.image_size, prep.image_size)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(model.eval(), (dummy,), dynamo=True, input_names=["image"], output_names=["logits"],
                                dynamic_shapes={"x": {0: batch}}, opset_version=opset, verbose=False)
    program.save(str(tmp))
    tmp.replace(out)
    return out


def export_onnx(artifact_dir: str | Path, opset: int = OPSET) -> Path:
    """Write the artifact's ``model.onnx`` and add it to SHA256SUMS."""
    art = load_artifact(artifact_dir)
    out = write_onnx(build_model(art), art.meta.preprocessing, art.folder / ONNX_FILES["onnx"], opset)
    write_checksums(art.folder)
    return out


def cache_root() -> Path:
    """``PNEUMO_CACHE_DIR``, else ``$XDG_CACHE_HOME/pneumo``, else ``~/.cache/pneumo``."""
    if os.environ.get("PNEUMO_CACHE_DIR"):
        return Path(os.environ["PNEUMO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pneumo"


def _artifact_key(art: Artifact) -> str:
    """Digest of what the export depends on: the checksummed weights, the network and
    preprocessing metadata (not the thresholds, sites or profiles beside them), torch, opset."""
    import importlib.metadata as md

    listed = {name: digest for digest, _, name in (line.partition("  ") for line in
                                                      (art.folder / SUMS).read_text().splitlines())}
    network = {k: art.raw.get(k) for k in ("model", "preprocessing", "ensemble", "classes", "plugins")}
    versions = []
    for dist in ("torch", "timm", "pneumo"):
        try:
            versions.append(md.version(dist))
        except md.PackageNotFoundError:
            versions.append("-")
    parts = [listed.get(WEIGHTS) or sha256_file(art.folder / WEIGHTS), json.dumps(network, sort_keys=True, default=str),
             *versions, str(OPSET)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def onnx_model_for(art: Artifact, model: torch.nn.Module) -> Path:
    """The ONNX file of ``art``: its own ``model.onnx`` (checksummed with the artifact) or an export
    of ``model`` in the cache, keyed by the artifact's digests and library versions and verified
    by its own SHA-256 on every use (against damage; against tampering, the loaders also compare
    its answers with the PyTorch model's). Concurrent processes (gunicorn workers) export once:
    the others wait on a lock."""
    own = art.folder / ONNX_FILES["onnx"]
    if own.is_file():
        return own
    folder = cache_root() / "onnx" / _artifact_key(art)
    path, digest = folder / "model.onnx", folder / "model.onnx.sha256"

    def valid() -> bool:
        return path.is_file() and digest.is_file() and digest.read_text().strip() == sha256_file(path)

    if valid():
        return path
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the user's own: others cannot swap models in
        with open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not valid():
                log.info("exporting %s to ONNX in %s (once per model version)", art.meta.name, folder)
                write_onnx(model, art.meta.preprocessing, path)
                tmp = folder / f".sha256.{os.getpid()}.tmp"
                tmp.write_text(sha256_file(path) + "\n")
                tmp.replace(digest)
    except OSError as exc:
        raise PneumoError(f"cannot write the ONNX export cache {folder} ({exc.strerror or exc}): set "
                          "PNEUMO_CACHE_DIR to a writable folder, or run `pneumo export ARTIFACT` first") from None
    return path
