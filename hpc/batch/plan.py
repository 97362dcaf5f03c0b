"""The plan of a batch prediction (``DIR/batch.json``), the layout of its folder, and the state
of each shard.

The plan freezes the input list at submission, so that every array task sees the same list and
shard ``i`` always means the same images. A shard is *done* when its ``.done.json`` marker
exists, matches the shard's key (the artifact's weights and metadata, the site, the
out-of-distribution policy and the shard's own inputs: paths, sizes, modification times) and its
rows file has the size and SHA-256 the marker records. Anything else is scored again: a changed
input list or model never reuses a stale shard.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field, ValidationError

from hpc.batch.atomic import write_text_atomic
from hpc.batch.inputs import InputEntry, entries_digest, list_inputs, shard_entries
from hpc.render import HpcError
from pneumo_core.inference.schema import ModelInfo, SiteInfo

PLAN_FORMAT = "pneumo-batch-predict/1"
MARKER_FORMAT = "pneumo-batch-shard/1"


class BatchPlan(BaseModel):
    """What every task and the merge read: the artifact, the options and the frozen inputs."""

    format: Literal["pneumo-batch-predict/1"] = PLAN_FORMAT
    artifact: str = Field(description="Model artifact folder, absolute.")
    artifact_digest: str = Field(description="Digest of the artifact's weights and metadata (see artifact_digest).")
    model: str = Field(description="Model name and version, for messages.")
    source: str = Field(description="The folder or CSV manifest the inputs came from, absolute.")
    shards: int = Field(ge=1)
    backend: str = "auto"
    batch_size: int = Field(16, ge=1)
    site: Optional[str] = None
    ood_policy: Literal["flag", "reject"] = "flag"
    inputs: list[InputEntry] = Field(min_length=1)

    def shard_inputs(self, index: int) -> Sequence[InputEntry]:
        """The inputs of shard ``index``: a contiguous block of the list."""
        return shard_entries(self.inputs, self.shards, index)

    def shard_key(self, index: int) -> str:
        """What a done shard must have been scored with; any change means scoring it again."""
        parts = [PLAN_FORMAT, self.artifact_digest, self.site, self.ood_policy,
                 entries_digest(self.shard_inputs(index))]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json(exclude={"format"}).encode()).hexdigest()


class ShardMarker(BaseModel):
    """``shard-*.done.json``: written after the rows file, so its presence says the shard is whole."""

    format: Literal["pneumo-batch-shard/1"] = MARKER_FORMAT
    shard: int
    shards: int
    key: str = Field(description="BatchPlan.shard_key of the plan it was scored for.")
    inputs: int = Field(description="Number of inputs (= rows).")
    inputs_sha256: str = Field(description="Digest of the shard's input list (paths, sizes, mtimes).")
    rows_sha256: str
    rows_bytes: int
    classified: int
    failed: int
    model: ModelInfo = Field(description="The model that answered, with the backend this task chose.")
    site: Optional[SiteInfo] = None
    backend_reason: str = ""
    host: str = ""
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class BatchDir:
    """The output folder of a batch prediction and the files in it."""

    root: Path

    @property
    def plan(self) -> Path:
        return self.root / "batch.json"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def predictions_csv(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def predictions_json(self) -> Path:
        return self.root / "predictions.json"

    def shard_name(self, index: int, shards: int) -> str:
        return f"shard-{index:05d}-of-{shards:05d}"

    def shard_rows(self, index: int, shards: int) -> Path:
        return self.shards / f"{self.shard_name(index, shards)}.jsonl"

    def shard_marker(self, index: int, shards: int) -> Path:
        return self.shards / f"{self.shard_name(index, shards)}.done.json"


@dataclass(frozen=True)
class ShardState:
    """Whether shard ``index`` is done; if not, ``problem`` says why in a few words."""

    index: int
    rows: Path
    done: bool
    problem: Optional[str] = None
    marker: Optional[ShardMarker] = None


def artifact_digest(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over the artifact's SHA256SUMS entries for its weights, metadata (threshold, sites)
    and out-of-distribution profile; ONNX exports added later do not change it."""
    from pneumo_core.artifact.store import ONNX_FILES, SUMS

    path = Path(folder) / SUMS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HpcError(f"{path}: cannot read the artifact's checksums ({exc.strerror or exc})") from None
    kept = sorted(line.strip() for line in lines
                  if line.strip() and line.partition("  ")[2] not in ONNX_FILES.values())
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()


def build_plan(artifact: str | os.PathLike[str], source: str | os.PathLike[str], shards: int, *,
               backend: str = "auto", batch_size: int = 16, site: Optional[str] = None,
               ood_policy: str = "flag", path_column: str = "path") -> BatchPlan:
    """Check the artifact (checksums, the site) and list the inputs; raises a PneumoError that
    says what to fix, so that nothing broken reaches the queue."""
    from pneumo_core.artifact import load_artifact
    from pneumo_core.artifact.sites import resolve_site
    from pneumo_core.config.schema import BACKENDS

    if backend not in BACKENDS:
        raise HpcError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if shards < 1:
        raise HpcError(f"--array must be at least 1, got {shards}")
    art = load_artifact(artifact)
    if site:
        resolve_site(art.sites, site)
    entries = list_inputs(source, path_column)
    if shards > len(entries):
        raise HpcError(f"--array {shards} asks for more tasks than there are images ({len(entries)}): "
                       f"use --array {len(entries)} or fewer")
    try:
        return BatchPlan(artifact=os.path.abspath(art.folder), artifact_digest=artifact_digest(art.folder),
                         model=f"{art.meta.name} {art.meta.version}", source=os.path.abspath(source), shards=shards,
                         backend=backend, batch_size=batch_size, site=site, ood_policy=ood_policy, inputs=entries)
    except ValidationError as exc:
        raise HpcError(f"invalid batch prediction options: {exc}") from None


def write_plan(batch: BatchDir, plan: BatchPlan) -> None:
    """Write ``batch.json`` (atomically). A plan that differs from the one there removes the merged
    predictions of the old one, so that no stale ``predictions.csv`` is left to be read."""
    batch.root.mkdir(parents=True, exist_ok=True)
    batch.shards.mkdir(exist_ok=True)
    if batch.plan.is_file():
        try:
            old = read_plan(batch)
        except HpcError:
            old = None
        if old is None or old.digest != plan.digest:
            batch.predictions_csv.unlink(missing_ok=True)
            batch.predictions_json.unlink(missing_ok=True)
    write_text_atomic(batch.plan, plan.model_dump_json(indent=1) + "\n")


def read_plan(batch: BatchDir) -> BatchPlan:
    """The plan in ``batch``; :class:`HpcError` naming the command that creates one if absent."""
    try:
        text = batch.plan.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HpcError(f"{batch.plan} not found: {batch.root} is not a batch prediction folder; create one with "
                       f"`pneumo hpc predict ARTIFACT FOLDER_OR_CSV --array N --out {batch.root}`") from None
    except OSError as exc:
        raise HpcError(f"{batch.plan}: {exc.strerror or exc}") from None
    try:
        return BatchPlan.model_validate_json(text)
    except ValidationError as exc:
        raise HpcError(f"{batch.plan} is damaged ({exc.error_count()} problems, first: {exc.errors()[0]['msg']}); "
                       "submit `pneumo hpc predict` again to rewrite it") from None


def _sha256_size(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def shard_state(batch: BatchDir, plan: BatchPlan, index: int) -> ShardState:
    """Is shard ``index`` of ``plan`` done? (see the module docstring for what that means)."""
    rows, marker_path = batch.shard_rows(index, plan.shards), batch.shard_marker(index, plan.shards)

    def state(problem: str) -> ShardState:
        return ShardState(index, rows, False, problem)

    if not marker_path.is_file():
        return state("not complete (its task failed, was stopped or has not finished)" if rows.exists()
                     else "missing (its task failed, was stopped or has not run)")
    try:
        marker = ShardMarker.model_validate_json(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return state(f"damaged marker {marker_path.name}")
    if marker.key != plan.shard_key(index) or marker.inputs != len(plan.shard_inputs(index)):
        return state("stale (scored for other inputs, another model or other options)")
    try:
        digest, size = _sha256_size(rows)
    except FileNotFoundError:
        return state("missing (its marker is there, its rows file is not)")
    except OSError as exc:
        return state(f"unreadable ({exc.strerror or exc})")
    if size != marker.rows_bytes or digest != marker.rows_sha256:
        return state("damaged (its rows file does not match its marker)")
    return ShardState(index, rows, True, None, marker)


def pending_shards(batch: BatchDir, plan: BatchPlan) -> list[int]:
    """Indexes of the shards of ``plan`` that are not done, in order."""
    return [i for i in range(plan.shards) if not shard_state(batch, plan, i).done]
