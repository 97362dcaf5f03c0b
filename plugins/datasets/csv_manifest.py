"""Dataset plugin ``csv``: a manifest with columns path,label[,patient][,split][,series,order].

``series`` and ``order`` give the acquisition order the ``temporal`` validation split uses
(lowest ``order`` of each series held out); without them it comes from Kermany file names.
"""
from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import DatasetSpec, PluginError, Sample, SampleTable, hookimpl, load_image
from plugins.datasets.kermany_names import acquisition_order, patient_id

_SPLITS = {"train", "val", "test"}


class CsvParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path = Field(description="CSV file with a header row; relative to the config file's folder.")
    root: Optional[Path] = Field(None, description="Base folder for relative image paths (default: the CSV's folder).")
    classes: Optional[list[str]] = Field(None, description="Class names; index = label. Default: sorted labels.")
    path_column: str = "path"
    label_column: str = "label"
    patient_column: str = "patient"
    split_column: str = "split"
    series_column: str = Field("series", description="Acquisition series (optional column).")
    order_column: str = Field("order", description="Acquisition order within the series, a number "
                              "(optional column; e.g. patient number or study date as YYYYMMDD).")


def _load(path: Path):
    return load_image(path).pixels


def _order(row: dict, params: CsvParams, name: str, where: str) -> Optional[tuple[str, float]]:
    value = (row.get(params.order_column) or "").strip()
    if not value:
        return acquisition_order(name)
    try:
        position = float(value)
    except ValueError:
        raise PluginError(f"csv: {where}: {params.order_column} {value!r} is not a number") from None
    if position != position or position in (float("inf"), float("-inf")):
        raise PluginError(f"csv: {where}: {params.order_column} {value!r} must be a finite number")
    return (row.get(params.series_column) or "").strip(), position


def build(params: CsvParams) -> SampleTable:
    file = Path(params.path).expanduser()
    if not file.is_file():
        raise PluginError(f"csv: manifest {file} not found (data.params.path)")
    root = Path(params.root).expanduser() if params.root else file.parent
    with file.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise PluginError(f"csv: {file} has no rows")
    for col in (params.path_column, params.label_column):
        if col not in rows[0]:
            raise PluginError(f"csv: {file} has no column '{col}' (columns: {', '.join(rows[0])})")
    classes = params.classes or sorted({r[params.label_column] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for line, row in enumerate(rows, start=2):
        label = row[params.label_column]
        if label not in index:
            raise PluginError(f"csv: {file}:{line}: label {label!r} is not one of {classes}")
        split = (row.get(params.split_column) or "").strip() or None
        if split is not None and split not in _SPLITS:
            raise PluginError(f"csv: {file}:{line}: split {split!r} must be train, val or test")
        path = root / row[params.path_column]
        group = (row.get(params.patient_column) or "").strip() or patient_id(path.name)
        samples.append(Sample(key=row[params.path_column], label=index[label], group=group,
                              load=partial(_load, path), split=split,
                              order=_order(row, params, path.name, f"{file}:{line}")))
    return SampleTable(classes=tuple(classes), samples=tuple(samples), description=f"csv manifest {file}")


@hookimpl
def pneumo_datasets():
    return [DatasetSpec(name="csv", build=build, params_model=CsvParams,
                        description="CSV manifest: path,label[,patient][,split]")]
