"""Slow and idle clients against the real gunicorn server: they are cut off, the API stays up."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from live_server import LiveServer

THREADS = 2


@pytest.fixture(scope="module")
def server(smoke_artifact):
    srv = LiveServer(smoke_artifact, threads=THREADS,
                     env={"PNEUMO_CLIENT_IDLE_S": "1.5", "PNEUMO_REQUEST_READ_S": "4"}).start()
    yield srv
    srv.stop()


def _open(server, first_bytes: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(first_bytes)
    return s


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes; (closed in time, what it sent)."""
    sock.settimeout(0.2)
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def _health_ok(server) -> float:
    t0 = time.monotonic()
    assert requests.get(server.url + "/api/v1/health", timeout=15).status_code == 200
    return time.monotonic() - t0


def test_unfinished_headers_do_not_take_the_api_down(server):
    stalled = [_open(server, b"GET / HTTP/1.1\r\nHost: x\r\n") for _ in range(THREADS * 3)]
    try:
        time.sleep(0.3)
        assert _health_ok(server) < 6, "health waited for the stalled clients"
        closed = [_closed_within(s, 6)[0] for s in stalled]
        assert all(closed), f"{closed.count(False)} stalled connections were never closed"
    finally:
        for s in stalled:
            s.close()
    assert "client too slow" in server.logs(tail=None)


def test_a_trickling_client_is_cut_at_the_request_deadline(server):
    stop = threading.Event()
    socks = [_open(server, b"GET /api/v1/health HTTP/1.1\r\n") for _ in range(THREADS)]

    def trickle(s: socket.socket) -> None:  # one byte every 0.5 s: never idle, never finished
        while not stop.wait(0.5):
            try:
                s.sendall(b"X")
            except OSError:
                return

    threads = [threading.Thread(target=trickle, args=(s,), daemon=True) for s in socks]
    for t in threads:
        t.start()
    try:
        t0 = time.monotonic()
        closed = [_closed_within(s, 7)[0] for s in socks]
        assert all(closed), "a client trickling one byte at a time kept its thread past the deadline"
        assert time.monotonic() - t0 < 7  # the 4 s deadline, not the 1.5 s idle limit, cut them
        assert _health_ok(server) < 3
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_a_stalled_body_gets_408_and_frees_the_thread(server, phantom_png):
    head = (f"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(phantom_png) + 1000}\r\n\r\n--b\r\n"
            'Content-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    s = _open(server, head + phantom_png[:100])
    try:
        closed, answer = _closed_within(s, 8)
        assert closed, "a stalled upload was never answered"
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"request_timeout" in answer
    finally:
        s.close()
    assert _health_ok(server) < 3
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    assert 'status="408"' in metrics and 'status="500"' not in metrics


def test_a_normal_upload_is_unaffected(server, phantom_png):
    r = requests.post(server.url + "/api/v1/predict", files={"file": ("x.png", phantom_png, "image/png")}, timeout=30)
    assert r.status_code == 200, r.text
