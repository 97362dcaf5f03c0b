"""Dataset plugin ``imagefolder``: ``root/{train,val,test}/{CLASS}/*`` as in the Kermany release.

A root holding class folders directly (no split folders) is read as unsplit data. Patient ids
and the acquisition order come from Kermany file names, so the core's validation splits never
leak a patient and its ``temporal`` split holds out the earliest patients of each series.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pneumo_core import DatasetSpec, PluginError, Sample, SampleTable, hookimpl, load_image
from plugins.datasets.kermany_names import acquisition_order, patient_id

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm", ".dicom"}


class ImageFolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: Path = Field(description="Folder holding train/val/test (or class folders directly); relative to "
                       "the config file's folder.")
    classes: list[str] = Field(["NORMAL", "PNEUMONIA"], min_length=2, description="Class folder names; index = label.")
    splits: list[str] = Field(["train", "val", "test"], description="Split folders to read when present.")


def _load(path: Path):
    return load_image(path).pixels


def build(params: ImageFolderParams) -> SampleTable:
    root = Path(params.root).expanduser()
    if not root.is_dir():
        raise PluginError(f"imagefolder: root {root} does not exist. Download the data "
                          "(`pneumo data download kermany`) or fix data.params.root.")
    split_dirs = [(s, root / s) for s in params.splits if (root / s).is_dir()]
    if not split_dirs:
        split_dirs = [(None, root)]
    samples = []
    for split, folder in split_dirs:
        for label, cls in enumerate(params.classes):
            cls_dir = folder / cls
            if not cls_dir.is_dir():
                continue
            for path in sorted(cls_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                    samples.append(Sample(key=str(path.relative_to(root)), label=label,
                                          group=patient_id(path.name), load=partial(_load, path), split=split,
                                          order=acquisition_order(path.name)))
    if not samples:
        raise PluginError(f"imagefolder: no images under {root} in class folders {params.classes}")
    return SampleTable(classes=tuple(params.classes), samples=tuple(samples), description=f"image folder {root}")


@hookimpl
def pneumo_datasets():
    return [DatasetSpec(name="imagefolder", build=build, params_model=ImageFolderParams,
                        description="root/{train,val,test}/{NORMAL,PNEUMONIA}/*, Kermany patient ids")]
