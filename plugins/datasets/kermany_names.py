"""Patient ids from Kermany file names (``person12_bacteria_45.jpeg`` -> ``person12``)."""
from __future__ import annotations

import re
from pathlib import Path

_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE),
)


def patient_id(filename: str) -> str:
    """The patient a Kermany file belongs to; unknown patterns are their own patient (the stem)."""
    stem = Path(filename).stem
    for pattern in _PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem
