"""Patient ids and acquisition order from Kermany file names.

``person12_bacteria_45.jpeg`` -> patient ``person12``, series ``person``, position 12;
``NORMAL2-IM-0383-0001.jpeg`` -> ``NORMAL2-IM-0383``, series ``NORMAL2-IM``, 383;
``IM-0115-0001.jpeg`` -> ``IM-0115``, series ``IM``, 115. Patient numbers grow with acquisition
time within a series (the official test split holds the lowest ones).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

_PATTERNS = (  # (series, pattern); group 1 is the patient, group 2 its number
    ("person", re.compile(r"^(person(\d+))_(?:bacteria|virus)", re.IGNORECASE)),
    ("NORMAL2-IM", re.compile(r"^(NORMAL2-IM-(\d+))-\d+", re.IGNORECASE)),
    ("IM", re.compile(r"^(IM-(\d+))-\d+", re.IGNORECASE)),
)


def _match(filename: str):
    stem = Path(filename).stem
    for series, pattern in _PATTERNS:
        match = pattern.match(stem)
        if match:
            return series, match
    return None, None


def patient_id(filename: str) -> str:
    """The patient a Kermany file belongs to; unknown patterns are their own patient (the stem)."""
    _, match = _match(filename)
    return match.group(1) if match else Path(filename).stem


def acquisition_order(filename: str) -> Optional[tuple[str, float]]:
    """``(series, patient number)`` of a Kermany file name, or ``None`` for other names."""
    series, match = _match(filename)
    return (series, float(match.group(2))) if match else None
