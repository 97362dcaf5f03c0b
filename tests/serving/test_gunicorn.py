"""A real gunicorn server: requests, a bounded fuzz of malformed uploads, and concurrent load."""
from __future__ import annotations

import io
import random
import struct
import threading
import zlib

import numpy as np
import pytest
import requests
from PIL import Image

from live_server import LiveServer


@pytest.fixture(scope="module")
def server(smoke_artifact):
    srv = LiveServer(smoke_artifact, env={"PNEUMO_MAX_UPLOAD_MB": "2"}).start()
    yield srv
    srv.stop()


def _post(server, name, data, ctype="application/octet-stream", heatmap=False):
    return requests.post(server.url + "/api/v1/predict", files={"file": (name, data, ctype)},
                         data={"heatmap": "true"} if heatmap else {}, timeout=60)


def test_serves_page_docs_and_predictions(server, phantom_png):
    assert "Not for clinical use" in requests.get(server.url + "/", timeout=10).text
    assert requests.get(server.url + "/api/v1/docs", timeout=10).status_code == 200
    r = _post(server, "x.png", phantom_png, "image/png", heatmap=True)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["heatmap_png_base64"]
    assert requests.get(server.url + "/api/v1/models", timeout=10).json()["models"][0]["name"] == "smoke"
    assert "pneumo_predictions_total" in requests.get(server.url + "/metrics", timeout=10).text


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb_png(side: int = 60000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _malformed(rng: random.Random, good_jpeg: bytes, good_png: bytes):
    """One malformed upload: (name, bytes, content type)."""
    kind = rng.randrange(9)
    if kind == 0:
        return "random.bin", rng.randbytes(rng.randrange(0, 4000)), "application/octet-stream"
    if kind == 1:
        return "trunc.jpg", good_jpeg[:rng.randrange(1, len(good_jpeg) - 1)], "image/jpeg"
    if kind == 2:
        return "bomb.png", _bomb_png(rng.choice([30000, 60000, 100000])), "image/png"
    if kind == 3:
        arr = (np.random.default_rng(rng.randrange(1 << 30)).integers(0, 65535, (48, 40))).astype(np.uint16)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        data = bytearray(buf.getvalue())
        data[rng.randrange(40, len(data))] ^= 0xFF  # corrupt a byte of a 16-bit PNG
        return "sixteen.png", bytes(data), "image/png"
    if kind == 4:
        buf = io.BytesIO()
        Image.new("RGBA", (4, 4)).save(buf, format="PNG")  # too small to classify
        return "tiny-rgba.png", buf.getvalue(), "image/png"
    if kind == 5:  # DICOM preamble and header but no pixel data
        return "nopixels.dcm", b"\x00" * 128 + b"DICM" + rng.randbytes(rng.randrange(0, 300)), "application/dicom"
    if kind == 6:
        return "page.html", b"<html><body>not an image</body></html>", "image/jpeg"
    if kind == 7:
        data = bytearray(good_png)
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(8, len(data))] = rng.randrange(256)
        return "flipped.png", bytes(data), "image/png"
    return "huge-dims.jpg", b"\xff\xd8\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", "image/jpeg"


def test_fuzz_malformed_uploads_never_5xx(server, phantom_png):
    rng = random.Random(1234)
    buf = io.BytesIO()
    Image.open(io.BytesIO(phantom_png)).save(buf, format="JPEG")
    good_jpeg = buf.getvalue()
    statuses = {}
    for i in range(220):
        name, data, ctype = _malformed(rng, good_jpeg, phantom_png)
        r = _post(server, name, data, ctype)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, f"upload {i} ({name}) gave {r.status_code}: {r.text[:300]}"
        if r.status_code != 200:  # a byte flip may still leave a decodable image
            assert r.json()["message"], r.text
    # wrong multipart shapes and oversize bodies
    assert requests.post(server.url + "/api/v1/predict", data=b"\x00" * 100, timeout=10,
                         headers={"Content-Type": "multipart/form-data; boundary=zz"}).status_code == 400
    assert requests.post(server.url + "/api/v1/predict", json={"image": "x"}, timeout=10).status_code == 415
    # 3 MB: under the 20 MB default, over this server's PNEUMO_MAX_UPLOAD_MB=2
    big = _post(server, "big.jpg", b"\xff\xd8\xff" + b"\x00" * (3 * 1024 * 1024), "image/jpeg")
    assert big.status_code == 413 and "limit 2,097,152" in big.json()["message"], big.text
    assert set(statuses) <= {200, 400, 413, 415}, statuses
    assert statuses.get(400, 0) > 50 and statuses.get(413, 0) > 5 and statuses.get(415, 0) > 5
    assert _post(server, "after.png", phantom_png, "image/png").status_code == 200, "server still answers"


def test_concurrent_load_no_errors_stable_memory(server, phantom_png):
    import psutil

    def rss() -> int:
        return sum(psutil.Process(p).memory_info().rss for p in server.worker_pids())

    def client(n: int, errors: list, latencies: list) -> None:
        session = requests.Session()
        for _ in range(n):
            r = session.post(server.url + "/api/v1/predict", files={"file": ("x.png", phantom_png, "image/png")}, timeout=60)
            latencies.append(r.elapsed.total_seconds())
            if r.status_code != 200 or r.json()["results"][0]["label"] not in ("NORMAL", "PNEUMONIA"):
                errors.append(r.status_code)

    def burst() -> tuple[list, list]:
        errors, latencies = [], []
        threads = [threading.Thread(target=client, args=(25, errors, latencies)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        return errors, latencies

    burst()  # warm-up: allocator pools and thread stacks reach their steady size
    before = rss()
    errors, latencies = burst()
    after = rss()
    assert errors == [] and len(latencies) == 200
    assert after - before < 150 * 1024 * 1024, f"worker memory grew by {(after - before) / 2**20:.0f} MiB"
    assert requests.get(server.url + "/api/v1/ready", timeout=10).status_code == 200


def test_one_worker_per_core_serves_and_aggregates_metrics(smoke_artifact, phantom_png):
    """The throughput deployment (PNEUMO_WORKERS > 1): every worker answers, /metrics adds them up."""
    srv = LiveServer(smoke_artifact, workers=2, threads=2).start()
    try:
        assert len(srv.worker_pids()) == 2
        statuses: list[int] = []

        def client():
            with requests.Session() as s:  # one connection per client: they land on either worker
                for _ in range(6):
                    statuses.append(s.post(srv.url + "/api/v1/predict", timeout=60,
                                           files={"file": ("x.png", phantom_png, "image/png")}).status_code)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert statuses == [200] * 24
        metrics = requests.get(srv.url + "/metrics", timeout=10).text
        counted = sum(float(line.split()[-1]) for line in metrics.splitlines()
                      if line.startswith("pneumo_predictions_total{"))
        assert counted == 24, metrics[:2000]
    finally:
        srv.stop()
