"""Logger plugin ``csv``: each epoch's metrics as a row of ``<run_dir>/metrics.csv``."""
from __future__ import annotations

import csv
from pathlib import Path

from pneumo_core import LoggerSpec, NoParams, RunInfo, hookimpl


class CsvLogger:
    """Rewrites ``metrics.csv`` atomically after each epoch; a repeated epoch replaces its row."""

    def __init__(self, run: RunInfo) -> None:
        self.path = Path(run.run_dir) / "metrics.csv"

    def start(self, params, resumed) -> None:
        if not resumed:
            self.path.unlink(missing_ok=True)

    def log_metrics(self, metrics, step) -> None:
        rows = []
        if self.path.exists():
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) < step]
        rows.append({"epoch": step, **metrics})
        fields = list(dict.fromkeys(k for row in rows for k in row))
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def log_artifact(self, folder, metrics) -> None:
        pass  # the artifact's report.md holds the final metrics already

    def close(self, status) -> None:
        pass


@hookimpl
def pneumo_loggers():
    return [LoggerSpec(name="csv", build=lambda params, run: CsvLogger(run), params_model=NoParams,
                       description="each epoch's metrics in <run_dir>/metrics.csv")]
