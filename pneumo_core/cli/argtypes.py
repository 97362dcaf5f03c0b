"""argparse value types shared by the subcommands."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer of 1 or more; anything else is a usage error (exit 2) that says so."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value
