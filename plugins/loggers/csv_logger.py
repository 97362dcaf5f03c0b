"""Logger plugin: appends each epoch's metrics to ``<run_dir>/metrics.csv``."""
from __future__ import annotations

import csv
from pathlib import Path

from pneumo_core import hookimpl


@hookimpl
def pneumo_epoch_end(run, metrics):
    path = Path(run.run_dir) / "metrics.csv"
    fields = list(metrics)
    if path.exists():  # a resumed run may repeat an epoch: keep rows before it
        with path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < int(metrics["epoch"])]
    else:
        rows = []
    rows.append({k: metrics[k] for k in fields})
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
