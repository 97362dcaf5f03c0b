"""Serving: REST latency and throughput beside the bare model forward of the same backend.

For each backend (PyTorch fp32, PyTorch bf16, ONNX Runtime; int8 ONNX as an extra) it starts a
real gunicorn server on a free loopback port and measures, through POST /api/v1/predict:
single-image latency p50/p99 one request at a time, and throughput with 1, 4 and 8 concurrent
clients (one worker whose forwards use every core; concurrent requests are micro-batched); then,
with one worker per core (the throughput deployment), throughput of 8 clients sending one image
or 16 images per request, each request on a new connection (as from many independent clients: the
kernel then spreads requests evenly over the workers, which 8 long-lived keep-alive connections
need not do: a 2/6 split cost a third of the throughput). In this same process it measures the
bare forward of that backend on one preprocessed image (in blocks that alternate with the
single-image requests, so both see the same machine) and on a batch of 16, and PyTorch fp32 eager
on one image, the reference of every 'x fp32' ratio, in blocks alternating with each figure.

Targets on a 2-core CPU at 224 px: REST p50 <= 1.3x the bare forward of the same backend; the
fastest backend's batch throughput >= 4x PyTorch fp32 eager (one image per forward).

The load generator shares the two cores with the server, so it is kept lean: plain sockets,
one multipart body per request with a fresh boundary (as browsers do), built before
the clock starts.

    python benchmarks/serve.py [--artifact models/pneumo-resnet18-kermany] [--requests 100]
                               [--calibration DIR]   # int8 calibration images (default: Kermany
                                                     # train images when present, else phantoms)
                               [--image FILE]        # what each request uploads (default: a
                                                     # Kermany train JPEG, else a PNG phantom)
"""
from __future__ import annotations

import argparse
import io
import mimetypes
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
KERMANY_TRAIN = REPO.parent / "shared" / "data" / "kermany-cxr" / "train"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from adapters.flask_app.background import BackgroundServer as LiveServer  # noqa: E402
from pneumo_core.artifact import build_model, load_artifact  # noqa: E402
from pneumo_core.data.preprocess import preprocess  # noqa: E402
from pneumo_core.imaging import load_image  # noqa: E402
from pneumo_core.inference.backends import OnnxBackend, TorchBackend  # noqa: E402
from pneumo_core.plugin_manager import get_plugin_manager  # noqa: E402


def phantoms(n: int, size: int) -> list[np.ndarray]:
    """``n`` synthetic phantoms of ``size`` px, both labels, through the ``synthetic`` dataset plugin."""
    spec = get_plugin_manager().dataset("synthetic")
    table = spec.build(spec.params_model(n_train=n, n_val=0, n_test=0, size=size, seed=11))
    return [s.load() for s in table.samples]


def sample_image(path: Path | None, size: int = 224) -> tuple[bytes, str, str]:
    """(bytes, upload file name, description) of the benchmark image: ``path`` when given, else
    a synthetic phantom PNG of ``size`` px."""
    if path is not None:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            what = f"{im.format} {im.width}x{im.height} {im.mode}"
        return data, path.name, f"{path.name} ({what}, {len(data) / 1000:.1f} kB)"
    buf = io.BytesIO()
    Image.fromarray(phantoms(1, size)[0]).save(buf, format="PNG")
    return buf.getvalue(), "phantom.png", f"synthetic phantom (PNG {size}x{size} L, {buf.tell() / 1000:.1f} kB)"


def bare_forward(backend, x: np.ndarray, n: int) -> list[float]:
    for _ in range(5):
        backend(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend(x)
        times.append(time.perf_counter() - t0)
    return times


def paired_latency(bare, x: np.ndarray, port: int, image: bytes, name: str, n: int,
                   blocks: int = 5) -> tuple[list[float], list[float], float]:
    """Bare forwards and single-image REST requests (one client), ``n`` of each, in alternating
    blocks so that both see the same machine: on a shared host the speed drifts within a minute.
    Returns (bare latencies s, REST latencies s, REST images/s)."""
    bare_t: list[float] = []
    rest_t: list[float] = []
    elapsed = 0.0
    blocks = max(1, min(blocks, n))
    for i in range(blocks):
        k = n // blocks + (i < n % blocks)
        bare_t += bare_forward(bare, x, k)
        rest_run(port, [image], 1, 3, name)  # the server was idle: warm it up, as bare_forward does
        lat, ips = rest_run(port, [image], 1, k, name)
        rest_t += lat
        elapsed += k / ips
    return bare_t, rest_t, len(rest_t) / elapsed


def alternating(block: Callable[[int], tuple[int, float]], total: int, base, x: np.ndarray,
                warm: int = 0, blocks: int = 3) -> tuple[float, float]:
    """Throughput of ``block`` and of the fp32 eager baseline ``base`` (one image per forward),
    measured in alternating blocks so their ratio is not skewed by the machine's drift.

    ``block(k)`` does ``k`` units of work and returns (images, seconds); ``warm`` units run
    untimed before each block. Returns (images/s of ``block``, images/s of ``base``)."""
    images = seconds = 0.0
    base_t: list[float] = []
    for _ in range(blocks):
        base_t += bare_forward(base, x, 20)
        if warm:
            block(warm)
        n, dt = block(total // blocks)
        images, seconds = images + n, seconds + dt
    return images / seconds, 1 / statistics.median(base_t)


def multipart(images: list[bytes], name: str = "x.png") -> tuple[bytes, str]:
    """A multipart/form-data body with one 'file' part per image, and its content type."""
    boundary = uuid.uuid4().hex
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{i}-{name}\"\r\n"
             f"Content-Type: {ctype}\r\n\r\n".encode() + img + b"\r\n" for i, img in enumerate(images)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def read_response(rfile) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response with a Content-Length (as Flask sends JSON).

    Hand-rolled on purpose: this client shares the server's two cores, and http.client's
    header parsing (email.parser) added about 0.15 ms to every measured request."""
    status = int(rfile.readline().split()[1])
    length = None
    while (line := rfile.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError("response without Content-Length: this load generator cannot frame it")
    return status, rfile.read(length)


def rest_run(port: int, images: list[bytes], concurrency: int, total: int, name: str = "x.png",
             reconnect: bool = False) -> tuple[list[float], float]:
    """``total`` requests of ``images`` from ``concurrency`` clients: (latencies s, images/s).

    Clients keep their connection open, or with ``reconnect`` open one per request (timed).
    Throughput counts the requests done while every client was still busy, so the drain at the
    end (some clients finished, the server less loaded) does not dilute it."""
    latencies: list[float] = []
    done_at: dict[int, list[float]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    close = "Connection: close\r\n" if reconnect else ""

    if total < concurrency:
        raise ValueError(f"{total} requests cannot keep {concurrency} clients busy")

    def client(i: int):
        conn = None
        done_at[i] = []
        try:
            for _ in range(total // concurrency):
                body, ctype = multipart(images, name)
                request = (f"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
                           f"Content-Length: {len(body)}\r\n{close}\r\n").encode() + body
                t0 = time.perf_counter()
                if conn is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    conn = sock, sock.makefile("rb")
                conn[0].sendall(request)
                status, text = read_response(conn[1])
                if reconnect:
                    conn[1].close()
                    conn[0].close()
                    conn = None
                done_at[i].append(time.perf_counter())
                dt = done_at[i][-1] - t0
                with lock:
                    latencies.append(dt)
                    if status != 200:
                        errors.append(f"HTTP {status}: {text[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - reported by the caller, not lost in a thread
            with lock:
                errors.append(f"client {i}: {exc!r}")
        finally:
            if conn is not None:
                conn[1].close()
                conn[0].close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    end = min(times[-1] for times in done_at.values())  # the first client to run out of work
    done = sum(t <= end for times in done_at.values() for t in times)
    return latencies, done * len(images) / (end - start)


def table(title: str, rows: list[dict], columns: list[tuple]) -> None:
    """Print ``rows`` under ``title``; columns are (header, width, cell); a negative width aligns left."""
    def line(cells: list[str]) -> str:
        return "".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w, _) in zip(cells, columns))

    head = line([h for h, _, _ in columns])
    print(f"\n{title}\n{head}\n" + "-" * len(head))
    for r in rows:
        print(line([cell(r) for _, _, cell in columns]))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=str(REPO / "models" / "pneumo-resnet18-kermany"))
    p.add_argument("--requests", type=int, default=100, help="requests per concurrency level")
    p.add_argument("--calibration", default=str(KERMANY_TRAIN),
                   help="images for int8 calibration (phantoms when the folder is missing)")
    p.add_argument("--image", type=Path, default=next(iter(sorted(KERMANY_TRAIN.glob("*/*.jpeg"))), None),
                   help="the image every request sends (default: the first Kermany train image, as "
                        "distributed: 8-bit JPEG; a synthetic PNG phantom when the data is missing)")
    args = p.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # what a one-worker server uses (gunicorn_conf.post_fork)
    work = Path(tempfile.mkdtemp(prefix="pneumo-bench-"))
    art_dir = work / "artifact"
    shutil.copytree(args.artifact, art_dir)
    calib = Path(args.calibration) if args.calibration else None
    if calib is None or not calib.is_dir():
        calib = work / "calibration"
        calib.mkdir()
        for i, image in enumerate(phantoms(64, 224)):
            Image.fromarray(image).save(calib / f"{i}.png")
    subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", "export", str(art_dir)], check=True,
                   capture_output=True)
    int8 = subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", "export", str(art_dir), "--format",
                           "onnx-int8", "--calibration", str(calib)], check=True, capture_output=True, text=True)
    drift_line = int8.stdout.strip().splitlines()[-1]
    art = load_artifact(art_dir)
    image, name, image_about = sample_image(args.image, art.meta.preprocessing.image_size)
    x = preprocess(load_image(image).pixels, art.meta.preprocessing)[None]
    backends = {"torch-fp32": ("torch", "fp32"), "torch-bf16": ("torch", "bf16"), "onnx": ("onnx", "fp32"),
                "onnx-int8": ("onnx-int8", "fp32")}
    batch = 16  # images per batched request (the API's default max_batch) and per bare batch forward
    rows = []
    fp32_eager = TorchBackend(build_model(art), "fp32")  # the reference of every 'x fp32' ratio
    cores = os.cpu_count() or 1
    for label, (kind, precision) in backends.items():
        if kind.startswith("onnx"):
            bare = OnnxBackend(art_dir / ("model.onnx" if kind == "onnx" else "model.int8.onnx"), name=kind)
        else:
            bare = TorchBackend(build_model(art), precision)
        xb = np.repeat(x, batch, axis=0)
        batch_ips, base_b = alternating(lambda k: (k * batch, sum(bare_forward(bare, xb, k))),
                                        max(8, args.requests // 4), fp32_eager, x)
        env = {"PNEUMO_BACKEND": kind, "PNEUMO_PRECISION": precision}
        srv = LiveServer(art_dir, env=env, workers=1, threads=8).start()  # latency: all cores per forward
        try:
            rest_run(srv.port, [image], 1, 10, name)  # warm-up
            bare_t, lat1, thr1 = paired_latency(bare, x, srv.port, image, name, args.requests)
            _, thr4 = rest_run(srv.port, [image], 4, args.requests, name)
            _, thr8 = rest_run(srv.port, [image], 8, args.requests, name)
        finally:
            srv.stop()
        del bare
        srv = LiveServer(art_dir, env=env, workers=cores, threads=8).start()  # throughput: a worker per core

        def rest_block(images: list[bytes]) -> Callable[[int], tuple[int, float]]:
            def run(k: int) -> tuple[int, float]:
                lat, ips = rest_run(srv.port, images, 8, k, name, reconnect=True)
                return len(lat) * len(images), len(lat) * len(images) / ips
            return run

        try:
            many1, base_1 = alternating(rest_block([image]), 4 * args.requests, fp32_eager, x, warm=16)
            many_b, base_m = alternating(rest_block([image] * batch), 8 * max(4, args.requests // 8), fp32_eager, x,
                                         warm=8)
        finally:
            srv.stop()
        rows.append(dict(backend=label, bare_p50=pct(bare_t, 50), p50=pct(lat1, 50), p99=pct(lat1, 99),
                         thr1=thr1, thr4=thr4, thr8=thr8, batch_ips=batch_ips, many1=many1, many_b=many_b,
                         batch_x=batch_ips / base_b, many1_x=many1 / base_1, many_b_x=many_b / base_m,
                         bases=[base_b, base_1, base_m]))
    base = statistics.median([b for r in rows for b in r["bases"]])
    print(f"\nServing — {art.meta.name}, {art.meta.preprocessing.image_size} px, {os.cpu_count()} cores, "
          f"{args.requests} requests per level\nImage: {image_about}")
    table("Latency: 1 gunicorn worker (each forward uses every core), one image per request", rows, [
        ("backend", -12, lambda r: r["backend"]),
        ("bare p50 ms", 12, lambda r: f"{r['bare_p50']:.1f}"),
        ("REST p50 ms", 12, lambda r: f"{r['p50']:.1f}"),
        ("REST p99 ms", 12, lambda r: f"{r['p99']:.1f}"),
        ("p50 ratio", 10, lambda r: f"{r['p50'] / r['bare_p50']:.2f}"),
        ("REST img/s c=1", 15, lambda r: f"{r['thr1']:.1f}"),
        ("c=4", 7, lambda r: f"{r['thr4']:.1f}"),
        ("c=8", 7, lambda r: f"{r['thr8']:.1f}")])
    table(f"Throughput: one gunicorn worker per core (PNEUMO_WORKERS={cores}), 8 clients, a connection per request",
          rows, [
        ("backend", -12, lambda r: r["backend"]),
        (f"bare b={batch} img/s", 16, lambda r: f"{r['batch_ips']:.1f}"),
        ("x fp32", 7, lambda r: f"{r['batch_x']:.2f}"),
        ("REST 1 img/req", 15, lambda r: f"{r['many1']:.1f}"),
        ("x fp32", 7, lambda r: f"{r['many1_x']:.2f}"),
        (f"REST {batch} img/req", 16, lambda r: f"{r['many_b']:.1f}"),
        ("x fp32", 7, lambda r: f"{r['many_b_x']:.2f}")])
    named = [r for r in rows if r["backend"] != "onnx-int8"]
    worst = max(named, key=lambda r: r["p50"] / r["bare_p50"])
    best = max(rows, key=lambda r: r["many_b_x"])
    print(f"\n'x fp32': ratio to PyTorch fp32 eager, one image per forward (median {base:.1f} img/s), measured\n"
          f"in blocks alternating with each figure.\n"
          f"Target REST p50 <= 1.3x bare (fp32, bf16, onnx): worst {worst['backend']} "
          f"{worst['p50'] / worst['bare_p50']:.2f}x.\n"
          f"Target batch throughput >= 4x fp32 eager: {best['backend']} {best['many_b_x']:.2f}x through REST, "
          f"{best['batch_x']:.2f}x bare.\n"
          f"int8 calibration ({calib}): {drift_line}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
