"""Merge the shards of a batch prediction: ``pneumo hpc merge DIR`` (what the merge job runs).

Writes ``predictions.csv`` (one row per input, in input order) and ``predictions.json`` (a
:class:`BatchPredictions`: the model and site that answered, the counts, and every
:class:`~hpc.batch.rows.ShardRow`), both atomically. Refuses, naming them, when any shard is not
done, so that a partial merge is never mistaken for the whole.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ValidationError

from hpc.batch.atomic import atomic_writer
from hpc.batch.plan import BatchDir, ShardState, read_plan, shard_state
from hpc.batch.rows import ShardRow
from hpc.render import HpcError
from pneumo_core.inference.schema import ModelInfo, SiteInfo

CSV_COLUMNS = ("path", "label", "probability", "threshold", "out_of_distribution", "ood_score", "warnings",
               "error", "message")
_LISTED = 20  # missing shards named one by one in the error; the rest are counted


class MissingShardsError(HpcError):
    """Some shards are not done; ``missing`` holds their states."""

    def __init__(self, message: str, missing: list[ShardState]) -> None:
        super().__init__(message)
        self.missing = missing


class ShardSummary(BaseModel):
    shard: int
    rows: int
    classified: int
    failed: int
    backend: str
    host: str
    elapsed_s: float


class BatchPredictions(BaseModel):
    """``predictions.json``: ``results`` has one row per input, in the plan's order."""

    model: ModelInfo
    site: Optional[SiteInfo] = None
    artifact: str
    source: str
    count: int
    classified: int
    failed: int
    shards: list[ShardSummary]
    results: list[ShardRow]


@dataclass(frozen=True)
class MergeSummary:
    csv: Path
    json: Path
    count: int
    classified: int
    failed: int


def _missing_message(batch: BatchDir, shards: int, missing: list[ShardState]) -> str:
    lines = [f"  shard {s.index} ({s.rows}): {s.problem}" for s in missing[:_LISTED]]
    if len(missing) > _LISTED:
        lines.append(f"  ... and {len(missing) - _LISTED} more")
    return (f"{len(missing)} of {shards} shards of {batch.root} are not done, so nothing was merged:\n"
            + "\n".join(lines) + f"\nTheir tasks' logs are in {batch.logs}. Submit the same `pneumo hpc predict` "
            "command again: it runs only the shards that are not done, then merges.")


def _csv_row(row: ShardRow) -> list[str]:
    r, e = row.result, row.error
    if r is None:
        return [row.path, "", "", "", "", "", "", e.code, e.message]
    ood = "" if r.out_of_distribution is None else str(r.out_of_distribution).lower()
    return [row.path, r.label, repr(r.probability), repr(r.threshold), ood,
            "" if r.ood_score is None else repr(r.ood_score), "; ".join(r.warnings), "", ""]


def merge(out: str | Path) -> MergeSummary:
    """Merge every shard of the plan in ``out``; raises :class:`MissingShardsError` naming the
    shards that are not done (missing, incomplete, stale or damaged)."""
    batch = BatchDir(Path(out))
    plan = read_plan(batch)
    states = [shard_state(batch, plan, i) for i in range(plan.shards)]
    missing = [s for s in states if not s.done]
    if missing:
        raise MissingShardsError(_missing_message(batch, plan.shards, missing), missing)
    markers = [s.marker for s in states]
    classified, failed = sum(m.classified for m in markers), sum(m.failed for m in markers)
    shards = [ShardSummary(shard=m.shard, rows=m.inputs, classified=m.classified, failed=m.failed,
                           backend=m.model.backend, host=m.host, elapsed_s=m.elapsed_s) for m in markers]
    head = BatchPredictions(model=markers[0].model, site=markers[0].site, artifact=plan.artifact, source=plan.source,
                            count=len(plan.inputs), classified=classified, failed=failed, shards=shards, results=[])
    head_json = head.model_dump_json(exclude={"results"})
    with atomic_writer(batch.predictions_csv) as fcsv, atomic_writer(batch.predictions_json) as fjson:
        writer = csv.writer(fcsv, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        fjson.write(head_json[:-1] + ', "results": [\n')
        first = True
        for state in states:
            expected = plan.shard_inputs(state.index)
            n = -1
            with open(state.rows, encoding="utf-8") as fh:
                for n, line in enumerate(fh):
                    try:
                        row = ShardRow.model_validate_json(line)
                    except ValidationError as exc:
                        raise HpcError(f"{state.rows}:{n + 1}: not a shard row ({exc.errors()[0]['msg']}); delete "
                                       "the shard and submit again to score it anew") from None
                    if n >= len(expected) or row.path != expected[n].path:
                        raise HpcError(f"{state.rows}:{n + 1}: row for {row.path}, but the plan has "
                                       f"{expected[n].path if n < len(expected) else 'no more inputs'} there; delete "
                                       "the shard and submit again to score it anew")
                    writer.writerow(_csv_row(row))
                    fjson.write(("" if first else ",\n") + row.model_dump_json())
                    first = False
            if n + 1 != len(expected):
                raise HpcError(f"{state.rows}: {n + 1} rows for the plan's {len(expected)} inputs of shard "
                               f"{state.index}; delete the shard and submit again to score it anew")
        fjson.write("\n]}\n")
    return MergeSummary(batch.predictions_csv, batch.predictions_json, len(plan.inputs), classified, failed)
