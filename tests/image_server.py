"""A local image server on 127.0.0.1 for the image_url tests (RunPod fetch, SSRF guard)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote


class ImageHandler(BaseHTTPRequestHandler):
    """Routes: /x.png (the phantom), /big (Content-Length over the limit), /big-stream (no
    Content-Length, streamed), /redirect -> /x.png, /redirect-metadata, /redirect-to?URL -> URL, /loop, /slow, else 404."""

    png: bytes = b""
    hits: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        if self.path == "/x.png":
            self._send(200, self.png, {"Content-Type": "image/png"})
        elif self.path == "/big":
            self._send(200, self.png + b"\0" * 4096, {"Content-Type": "image/png"})
        elif self.path == "/big-stream":  # HTTP/1.0 style: no Content-Length, body until close
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(8):
                    self.wfile.write(b"\0" * 1024)
                    self.wfile.flush()
            except OSError:
                pass
        elif self.path == "/redirect":
            self._send(302, b"", {"Location": "/x.png"})
        elif self.path.startswith("/redirect-to?"):
            self._send(302, b"", {"Location": unquote(self.path.split("?", 1)[1])})
        elif self.path == "/redirect-metadata":
            self._send(302, b"", {"Location": "http://169.254.169.254/latest/meta-data"})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif self.path == "/slow":  # a byte every 0.1 s for up to 3 s
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._send(404, b"not found", {"Content-Type": "text/plain"})

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)



@contextmanager
def serve_images(png: bytes) -> Iterator[tuple[str, list]]:
    """Serve ``png`` on 127.0.0.1 (loopback only); yield the base URL and the list of requested paths."""
    handler = type("Handler", (ImageHandler,), {"png": png, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
