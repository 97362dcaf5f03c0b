"""A gunicorn ``gthread`` worker that slow or idle clients cannot starve.

gunicorn's threaded worker hands a connection to a thread as soon as its first byte arrives,
and the thread then reads the request with blocking, untimed reads: a handful of clients that
send half a header (or half a body) and wait hold every thread, and every endpoint hangs.
gunicorn has no request-read timeout, so this worker adds two, on the connection socket:

* ``PNEUMO_CLIENT_IDLE_S`` (default 10): the longest wait for any one read or write;
* ``PNEUMO_REQUEST_READ_S`` (default 60): the longest time to receive one whole request,
  headers and body, however the client trickles it.

A client over either limit gets its connection closed (one warning line names it); a body cut
off inside the app answers 408. Behind a reverse proxy that buffers requests (nginx's default),
these limits rarely fire; README "Production" shows that setting.

Hand-written because no maintained gunicorn worker bounds request reads; the subclass only
wraps the socket and leaves gunicorn's connection handling as it is.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import time

from gunicorn.workers.gthread import ThreadWorker

log = logging.getLogger("pneumo.serve")


class SlowClientError(ConnectionResetError):
    """The client sent too slowly; gunicorn treats it as a reset connection (no traceback)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ECONNRESET, message)


def stalled_by(exc: BaseException) -> "SlowClientError | None":
    """The SlowClientError behind ``exc`` (anywhere in its chain of causes), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SlowClientError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _seconds(var: str, default: float) -> float:
    raw = os.environ.get(var, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{var} must be a number of seconds, not {raw!r}") from None
    if not value > 0:
        raise SystemExit(f"{var} must be above 0 seconds, not {raw!r}")
    return value


class DeadlineSocket(socket.socket):
    """A client socket whose reads obey an idle timeout and a per-request deadline.

    gunicorn switches the socket to blocking mode at the start of every request (keep-alive
    requests included); that is where the request's deadline starts. A timeout gunicorn sets
    itself (its 2 s linger when closing) is kept when shorter, and once the socket is shut down
    for closing, reads are gunicorn's drain: no deadline, no warning.
    """

    idle_s: float
    request_s: float
    _SEND_CHUNK = 64 * 1024

    @classmethod
    def adopt(cls, sock: socket.socket, idle_s: float, request_s: float) -> "DeadlineSocket":
        blocking = sock.getblocking()
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new.idle_s, new.request_s = idle_s, request_s
        new._deadline, new._caller_timeout, new._closing = None, None, False
        new.setblocking(blocking)
        return new

    def setblocking(self, flag: bool) -> None:
        self._caller_timeout = None
        if flag and not self._closing:
            self._deadline = time.monotonic() + self.request_s
            super().settimeout(self.idle_s)
        else:
            self._deadline = None
            super().setblocking(flag)

    def settimeout(self, value: float | None) -> None:
        self._caller_timeout = value
        super().settimeout(value)

    def shutdown(self, how: int) -> None:
        self._closing, self._deadline = True, None
        super().shutdown(how)

    def _arm_read(self) -> None:
        if self._deadline is None:  # non-blocking (on gunicorn's poller), or closing
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow(f"no complete request within {self.request_s:g} s")
        limits = [self.idle_s, left] + ([self._caller_timeout] if self._caller_timeout else [])
        super().settimeout(min(limits))

    def _too_slow(self, why: str) -> SlowClientError:
        try:
            peer = self.getpeername()
            peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else (peer or "a unix-socket client")
        except OSError:
            peer = "a client"
        log.warning("closing the connection from %s: %s (client too slow)", peer, why)
        return SlowClientError(f"client too slow: {why}")

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm_read()
        try:
            return super().recv(bufsize, flags)
        except TimeoutError:
            if self._deadline is None:
                raise
            raise self._too_slow(f"nothing received for {self.gettimeout():.3g} s") from None

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        self._arm_read()
        try:
            return super().recv_into(buffer, nbytes, flags)
        except TimeoutError:
            if self._deadline is None:
                raise
            raise self._too_slow(f"nothing received for {self.gettimeout():.3g} s") from None

    def sendall(self, data, flags: int = 0) -> None:
        """Like socket.sendall, but the idle limit applies to each chunk (a timeout on sendall
        itself would bound the whole response, cutting large ones on slow links)."""
        if self._deadline is None:
            return super().sendall(data, flags)
        super().settimeout(self.idle_s)
        view = memoryview(data).cast("B")
        while view:
            try:
                sent = super().send(view[:self._SEND_CHUNK], flags)
            except TimeoutError:
                raise self._too_slow(f"the response was not read for {self.idle_s:g} s") from None
            view = view[sent:]


class GuardedThreadWorker(ThreadWorker):
    """``gthread`` with :class:`DeadlineSocket` client sockets (plain HTTP; TLS connections are
    served unchanged: terminate TLS at the proxy)."""

    def init_process(self) -> None:
        self.idle_s = _seconds("PNEUMO_CLIENT_IDLE_S", 10.0)
        self.request_s = _seconds("PNEUMO_REQUEST_READ_S", 60.0)
        super().init_process()

    def enqueue_req(self, conn) -> None:
        if not self.cfg.is_ssl and not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket.adopt(conn.sock, self.idle_s, self.request_s)
        super().enqueue_req(conn)
