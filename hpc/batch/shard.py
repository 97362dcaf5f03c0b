"""Score one shard of a batch prediction: ``pneumo hpc predict-shard DIR --shard I`` (what array
task ``I`` runs).

The artifact is loaded once; images go through the :class:`~pneumo_core.inference.Predictor` in
batches. An image that cannot be read or is refused becomes an error row, so one bad file never
fails the shard. Rows stream into a temporary file that replaces the shard file only when it is
complete; the ``.done.json`` marker is written after it.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hpc.batch.atomic import atomic_writer, write_text_atomic
from hpc.batch.inputs import InputEntry, entries_digest, shard_bounds
from hpc.batch.plan import BatchDir, ShardMarker, artifact_digest, read_plan, shard_state
from hpc.batch.rows import RowError, ShardRow
from hpc.render import HpcError
from pneumo_core.errors import PneumoError

log = logging.getLogger("pneumo.hpc.batch")
LOG_EVERY_S = 30.0


@dataclass(frozen=True)
class ShardOutcome:
    """What :func:`score_shard` did: ``skipped`` when the shard was already done."""

    index: int
    rows: Path
    skipped: bool
    marker: ShardMarker


def _read(entry: InputEntry) -> bytes | RowError:
    try:
        return Path(entry.path).read_bytes()
    except FileNotFoundError:
        return RowError(code="file_not_found", message=f"{entry.path}: file not found")
    except OSError as exc:
        return RowError(code="unreadable_file", message=f"{entry.path}: {exc.strerror or exc}")


def _error(exc: PneumoError) -> RowError:
    return RowError(code=getattr(exc, "code", "error"), message=str(exc))


def classify(predictor, entries: Sequence[InputEntry], site: Optional[str] = None) -> list[ShardRow]:
    """One row per entry, in order: the batch in one request; when that fails, one request per
    image so that only the images at fault get error rows. ``predictor`` is a Predictor."""
    from pneumo_core.inference import InputImage, PredictRequest

    def request(items: list[tuple[InputEntry, bytes]]):
        images = [InputImage(name=e.path, data=data) for e, data in items]
        return predictor.predict(PredictRequest(images=images, source="hpc", site=site)).results

    rows: list[Optional[ShardRow]] = [None] * len(entries)
    readable: list[tuple[int, InputEntry, bytes]] = []
    for i, entry in enumerate(entries):
        data = _read(entry)
        if isinstance(data, RowError):
            rows[i] = ShardRow(path=entry.path, error=data)
        else:
            readable.append((i, entry, data))
    if readable:
        try:
            results = request([(e, d) for _, e, d in readable])
            for (i, entry, _), result in zip(readable, results):
                rows[i] = ShardRow(path=entry.path, result=result)
        except PneumoError:
            for i, entry, data in readable:
                try:
                    rows[i] = ShardRow(path=entry.path, result=request([(entry, data)])[0])
                except PneumoError as exc:
                    rows[i] = ShardRow(path=entry.path, error=_error(exc))
    if any(r is None for r in rows):  # every entry is either unreadable or was scored above
        raise PneumoError("internal error: an input of the shard got no row; please report it")
    return [r for r in rows if r is not None]


class _Progress:
    """A tqdm bar on a terminal; elsewhere (a Slurm log) a line every ``every_s`` seconds."""

    def __init__(self, total: int, label: str, every_s: float) -> None:
        from tqdm.auto import tqdm

        self.total, self.label, self.every_s = total, label, every_s
        self.bar = tqdm(total=total, unit="img", desc=label, disable=None, file=sys.stderr)
        self.done, self.t0 = 0, time.monotonic()
        self.last = self.t0

    def update(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        now = time.monotonic()
        if self.bar.disable and (now - self.last >= self.every_s or self.done == self.total):
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d images (%.0f%%), %.1f img/s, about %.0f s left", self.label, self.done, self.total,
                     100 * self.done / max(self.total, 1), rate, left)

    def close(self) -> None:
        self.bar.close()


def score_shard(out: str | Path, index: int, *, predictor=None, force: bool = False,
                log_every_s: float = LOG_EVERY_S) -> ShardOutcome:
    """Score shard ``index`` of the plan in ``out`` unless it is already done (``force``: score it
    anyway). ``predictor``: a loaded Predictor to use instead of loading the plan's artifact
    (it must be that artifact). Raises :class:`HpcError` for a missing plan, an index out of range
    or an artifact that changed since the plan was written; per-image problems are error rows."""
    batch = BatchDir(Path(out))
    plan = read_plan(batch)
    if not 0 <= index < plan.shards:
        raise HpcError(f"--shard {index}: the plan in {batch.plan} has {plan.shards} shards, numbered 0 to "
                       f"{plan.shards - 1}")
    label = f"shard {index} of {plan.shards}"
    state = shard_state(batch, plan, index)
    if state.done and not force:
        log.info("%s already done (%d rows in %s): skipped", label, state.marker.inputs, state.rows)
        return ShardOutcome(index, state.rows, True, state.marker)

    entries = plan.shard_inputs(index)
    marker_path = batch.shard_marker(index, plan.shards)
    marker_path.unlink(missing_ok=True)  # from here on the shard is not done until the new marker lands
    batch.shards.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    start, stop = shard_bounds(len(plan.inputs), plan.shards, index)
    log.info("%s: %d images (inputs %d to %d of %d), model %s", label, len(entries), start, stop - 1,
             len(plan.inputs), plan.model)
    own = predictor is None
    if own:
        from pneumo_core.inference import Predictor

        predictor = Predictor(plan.artifact, backend=plan.backend, batching=False, ood_policy=plan.ood_policy)
    try:
        if artifact_digest(predictor.artifact.folder) != plan.artifact_digest:
            raise HpcError(f"{plan.artifact} changed since this batch was planned (its weights or metadata differ): "
                           "submit `pneumo hpc predict` again to plan it for the artifact as it is now")
        site_info = None
        if plan.site:
            from pneumo_core.artifact.sites import resolve_site
            from pneumo_core.inference.schema import SiteInfo

            site_info = SiteInfo.of(resolve_site(predictor.artifact.sites, plan.site))
        log.info("%s: backend %s (%s)", label, predictor.info.backend, predictor.backend_selection.reason)
        rows_path = batch.shard_rows(index, plan.shards)
        digest, size, classified, failed = hashlib.sha256(), 0, 0, 0
        progress = _Progress(len(entries), label, log_every_s)
        try:
            with atomic_writer(rows_path) as fh:
                for pos in range(0, len(entries), plan.batch_size):
                    chunk = entries[pos:pos + plan.batch_size]
                    for row in classify(predictor, chunk, plan.site):
                        line = row.model_dump_json() + "\n"
                        fh.write(line)
                        data = line.encode("utf-8")
                        digest.update(data)
                        size += len(data)
                        classified += row.result is not None
                        failed += row.error is not None
                    progress.update(len(chunk))
        finally:
            progress.close()
        marker = ShardMarker(shard=index, shards=plan.shards, key=plan.shard_key(index), inputs=len(entries),
                             inputs_sha256=entries_digest(entries), rows_sha256=digest.hexdigest(), rows_bytes=size,
                             classified=classified, failed=failed, model=predictor.info, site=site_info,
                             backend_reason=predictor.backend_selection.reason, host=socket.gethostname(),
                             elapsed_s=round(time.monotonic() - t0, 3))
        write_text_atomic(marker_path, marker.model_dump_json(indent=1) + "\n")
    finally:
        if own:
            predictor.close()
    log.info("%s done: %d classified, %d failed, %.1f s -> %s", label, classified, failed,
             time.monotonic() - t0, rows_path)
    return ShardOutcome(index, rows_path, False, marker)
