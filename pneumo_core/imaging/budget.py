"""A per-process budget for the memory that image decoding holds at once.

One large image (say a 6300x6300 RGBA PNG of 300 KB) takes about 600 MB while PIL decodes,
composites and converts it; a few of them at once in the threads of one server worker would take
gigabytes. Every decode first reserves its estimated peak from this budget and waits while the
others hold it, so concurrent decodes never hold more than ``PNEUMO_DECODE_BUDGET_MB`` (default
1024) together. An image larger than the whole budget (but within the pixel limit) waits until it
can run alone. After a large decode the freed memory is handed back to the operating system
(glibc's ``malloc_trim``), which would otherwise keep it in its arenas.

Hand-written: it is a counting semaphore over bytes, which the standard library does not have.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
import time
from collections import deque
from typing import Iterator, Optional

from pneumo_core.errors import PneumoError

_TRIM_ABOVE = 64 * 1024 * 1024


class DecoderBusyError(PneumoError):
    """The decode budget stayed full for the whole wait: the server is busy with large images."""

    code = "busy"
    http_status = 503


class DecodeBudget:
    def __init__(self, max_bytes: int, wait_s: float = 60.0) -> None:
        self.max_bytes, self.wait_s = max_bytes, wait_s
        self.held = self.peak = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()  # waiters in arrival order: a large image is not starved

    @contextlib.contextmanager
    def reserve(self, nbytes: int, label: str) -> Iterator[None]:
        """Hold ``nbytes`` (at most the whole budget) while the block runs; first come, first served."""
        need = max(0, min(int(nbytes), self.max_bytes))
        deadline = time.monotonic() + self.wait_s
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.held + need > self.max_bytes:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DecoderBusyError(f"{label}: the server is decoding other large images; its "
                                               f"{self.max_bytes / 2**20:.0f} MB decode budget stayed full for "
                                               f"{self.wait_s:g} s. Try again shortly, or send a smaller image.")
                    self._cond.wait(left)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
            self.held += need
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            with self._cond:
                self.held -= need
                self._cond.notify_all()
            if need >= _TRIM_ABOVE:
                _trim()


def _trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


_LIBC: Optional[object] = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _LIBC = False
    return _LIBC or None


def _budget_from_env() -> DecodeBudget:
    raw = os.environ.get("PNEUMO_DECODE_BUDGET_MB", "").strip()
    try:
        mb = float(raw) if raw else 1024.0
    except ValueError:
        mb = 1024.0
    return DecodeBudget(int(max(mb, 1) * 2**20))


BUDGET = _budget_from_env()  # shared by every decode of this process
