"""Serving: REST latency and throughput beside the bare model forward of the same backend.

For each backend (``auto``, the default, and the ones it chooses from: PyTorch fp32 and bf16, ONNX
Runtime, OpenVINO, int8 ONNX) it starts a real gunicorn server on a free loopback port and measures, through POST /api/v1/predict:
single-image latency p50/p99 one request at a time, and throughput with 1, 4 and 8 concurrent
clients (one worker whose forwards use every core; concurrent requests are micro-batched); then,
with one worker per core (the throughput deployment), throughput of 8 clients sending one image
or 16 images per request, each request on a new connection (as from many independent clients: the
kernel then spreads requests evenly over the workers, which 8 long-lived keep-alive connections
need not do: a 2/6 split cost a third of the throughput). In this same process it measures the
bare forward of that backend on one preprocessed image (in blocks that alternate with the
single-image requests, so both see the same machine) and on a batch of 16, and PyTorch fp32 eager
on one image, the reference of every 'x fp32' ratio, in blocks alternating with each figure.

The header names the CPU (model and the flags that decide the backends) and its matmul peak
(fp32, and bf16 where native, measured with torch.matmul); each backend's batch forward is shown
as GFLOP/s (model FLOPs counted by torch.utils.flop_counter) and as a fraction of the fp32 peak.

Targets (ratios within one run): the default (auto) REST p50 <= 0.65x a bare PyTorch fp32 eager
forward; the fastest accurate backend's batch throughput >= 4x PyTorch fp32 eager one image per
forward; int8 within 0.05 of fp32 on real X-rays or refused; ``--quick`` under 5 minutes.

The load generator shares the two cores with the server, so it is kept lean: plain sockets,
one multipart body per request with a fresh boundary (as browsers do), built before
the clock starts.

    python benchmarks/serve.py [--quick] [--backends auto,onnx,...] [--requests 100]
                               [--artifact models/pneumo-resnet18-kermany]
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
from pneumo_core.device import cpu_has_bf16, cpu_info  # noqa: E402
from pneumo_core.inference.backend_choice import choose_backend  # noqa: E402
from pneumo_core.inference.backends import OnnxBackend, OpenVinoBackend, TorchBackend, installed  # noqa: E402
from pneumo_core.inference.onnx_export import onnx_model_for  # noqa: E402

DECISIVE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
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


def matmul_peak_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained torch.matmul GFLOP/s of an n x n product on every core (best of short blocks)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def model_gflop(model: torch.nn.Module, x: np.ndarray) -> float:
    """GFLOP of one forward of ``x`` (one image), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.from_numpy(x))
    return counter.get_total_flops() / 1e9


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


ALL_BACKENDS = ("auto", "torch-fp32", "torch-bf16", "onnx", "openvino", "onnx-int8")


def bare_backend(label: str, art, art_dir: Path):
    """The in-process backend behind a row (for ``auto``: what auto chooses in this process)."""
    if label == "auto":
        return choose_backend(art, build_model(art))[0]
    if label.startswith("torch"):
        return TorchBackend(build_model(art), label.split("-")[1])
    path = onnx_model_for(art, build_model(art))
    if label == "openvino":
        return OpenVinoBackend(path)
    return OnnxBackend(art_dir / "model.int8.onnx", name=label) if label == "onnx-int8" else OnnxBackend(path)


def server_env(label: str) -> dict[str, str]:
    if label.startswith("torch"):
        return {"PNEUMO_BACKEND": "torch", "PNEUMO_PRECISION": label.split("-")[1]}
    return {"PNEUMO_BACKEND": label}


def main() -> int:
    t_start = time.perf_counter()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=str(REPO / "models" / "pneumo-resnet18-kermany"))
    p.add_argument("--requests", type=int, default=None, help="requests per concurrency level (default 100, "
                   "--quick 24)")
    p.add_argument("--quick", action="store_true", help="24 requests per level instead of 100: a full table in "
                   "a few minutes")
    p.add_argument("--backends", default=None,
                   help=f"comma-separated rows among {', '.join(ALL_BACKENDS)} (default: all that this machine "
                        "has; torch-bf16 only where the CPU has native bf16)")
    p.add_argument("--calibration", default=str(KERMANY_TRAIN),
                   help="images for int8 calibration (phantoms when the folder is missing)")
    p.add_argument("--image", type=Path, default=next(iter(sorted(KERMANY_TRAIN.glob("*/*.jpeg"))), None),
                   help="the image every request sends (default: the first Kermany train image, as "
                        "distributed: 8-bit JPEG; a synthetic PNG phantom when the data is missing)")
    args = p.parse_args()
    requests = args.requests or (24 if args.quick else 100)
    if args.backends:
        labels = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = set(labels) - set(ALL_BACKENDS)
        if unknown:
            p.error(f"unknown backends {sorted(unknown)}; choose among {', '.join(ALL_BACKENDS)}")
    else:
        labels = [b for b in ALL_BACKENDS if (b != "torch-bf16" or cpu_has_bf16())
                  and (b != "openvino" or installed("openvino"))]
    torch.set_num_threads(os.cpu_count() or 1)  # what a one-worker server uses (gunicorn_conf.post_fork)
    work = Path(tempfile.mkdtemp(prefix="pneumo-bench-"))
    os.environ.setdefault("PNEUMO_CACHE_DIR", str(work / "cache"))  # the servers share this process's export
    art_dir = work / "artifact"
    shutil.copytree(args.artifact, art_dir)
    drift_line = "not measured (onnx-int8 not among --backends)"
    if "onnx-int8" in labels:
        calib = Path(args.calibration) if args.calibration else None
        if calib is None or not calib.is_dir():
            calib = work / "calibration"
            calib.mkdir()
            for i, image in enumerate(phantoms(64, 224)):
                Image.fromarray(image).save(calib / f"{i}.png")
        int8 = subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", "export", str(art_dir), "--format",
                               "onnx-int8", "--calibration", str(calib)], capture_output=True, text=True)
        if int8.returncode == 0:
            drift_line = f"{calib}: {int8.stdout.strip().splitlines()[-1]}"
        else:
            drift_line = f"refused ({int8.stderr.strip().splitlines()[-1]})"
            labels.remove("onnx-int8")
    art = load_artifact(art_dir)
    image, name, image_about = sample_image(args.image, art.meta.preprocessing.image_size)
    x = preprocess(load_image(image).pixels, art.meta.preprocessing)[None]
    batch = 16  # images per batched request (the API's default max_batch) and per bare batch forward
    rows = []
    fp32_eager = TorchBackend(build_model(art), "fp32")  # the reference of every 'x fp32' ratio
    gflop = model_gflop(build_model(art), x)
    peak32 = matmul_peak_gflops(torch.float32)
    peak16 = matmul_peak_gflops(torch.bfloat16) if cpu_has_bf16() else None
    cores = os.cpu_count() or 1
    for label in labels:
        bare = bare_backend(label, art, art_dir)
        xb = np.repeat(x, batch, axis=0)
        batch_ips, base_b = alternating(lambda k: (k * batch, sum(bare_forward(bare, xb, k))),
                                        max(8, requests // 4), fp32_eager, x)
        env = server_env(label)
        srv = LiveServer(art_dir, env=env, workers=1, threads=8).start()  # latency: all cores per forward
        try:
            served = requests_get_backend(srv.url)
            rest_run(srv.port, [image], 1, 10, name)  # warm-up
            bare_t, lat1, thr1 = paired_latency(bare, x, srv.port, image, name, requests)
            base_t = bare_forward(fp32_eager, x, requests)
            _, thr4 = rest_run(srv.port, [image], 4, requests, name)
            _, thr8 = rest_run(srv.port, [image], 8, requests, name)
        finally:
            srv.stop()
        bare = None  # free it before the throughput servers start
        srv = LiveServer(art_dir, env=env, workers=cores, threads=8).start()  # throughput: a worker per core

        def rest_block(images: list[bytes]) -> Callable[[int], tuple[int, float]]:
            def run(k: int) -> tuple[int, float]:
                lat, ips = rest_run(srv.port, images, 8, k, name, reconnect=True)
                return len(lat) * len(images), len(lat) * len(images) / ips
            return run

        try:
            many1, base_1 = alternating(rest_block([image]), 4 * requests, fp32_eager, x, warm=16)
            many_b, base_m = alternating(rest_block([image] * batch), 8 * max(4, requests // 8), fp32_eager, x,
                                         warm=8)
        finally:
            srv.stop()
        rows.append(dict(backend=label if label != "auto" else f"auto: {served}", bare_p50=pct(bare_t, 50),
                         p50=pct(lat1, 50), p99=pct(lat1, 99), eager_p50=pct(base_t, 50),
                         thr1=thr1, thr4=thr4, thr8=thr8, batch_ips=batch_ips, many1=many1, many_b=many_b,
                         batch_x=batch_ips / base_b, many1_x=many1 / base_1, many_b_x=many_b / base_m,
                         bases=[base_b, base_1, base_m]))
    base = statistics.median([b for r in rows for b in r["bases"]])
    model_name, flags = cpu_info()
    print(f"\nServing — {art.meta.name}, {art.meta.preprocessing.image_size} px, {requests} requests per level"
          f"{' (--quick)' if args.quick else ''}\n"
          f"CPU: {model_name or 'unknown'}, {cores} cores; flags: "
          f"{' '.join(f for f in DECISIVE_FLAGS if f in flags) or 'none of ' + ', '.join(DECISIVE_FLAGS)}\n"
          f"matmul peak: {peak32:.0f} GFLOP/s fp32" + (f", {peak16:.0f} GFLOP/s bf16" if peak16 else "")
          + f"; model {gflop:.2f} GFLOP per image\nImage: {image_about}")
    table("Latency: 1 gunicorn worker (each forward uses every core), one image per request", rows, [
        ("backend", -20, lambda r: r["backend"]),
        ("bare p50 ms", 12, lambda r: f"{r['bare_p50']:.1f}"),
        ("REST p50 ms", 12, lambda r: f"{r['p50']:.1f}"),
        ("REST p99 ms", 12, lambda r: f"{r['p99']:.1f}"),
        ("REST / fp32 eager", 18, lambda r: f"{r['p50'] / r['eager_p50']:.2f}"),
        ("REST img/s c=1", 15, lambda r: f"{r['thr1']:.1f}"),
        ("c=4", 7, lambda r: f"{r['thr4']:.1f}"),
        ("c=8", 7, lambda r: f"{r['thr8']:.1f}")])
    table(f"Throughput: one gunicorn worker per core (PNEUMO_WORKERS={cores}), 8 clients, a connection per request",
          rows, [
        ("backend", -20, lambda r: r["backend"]),
        (f"bare b={batch} img/s", 16, lambda r: f"{r['batch_ips']:.1f}"),
        ("GFLOP/s", 8, lambda r: f"{r['batch_ips'] * gflop:.0f}"),
        ("of peak", 8, lambda r: f"{r['batch_ips'] * gflop / (peak16 if 'bf16' in r['backend'] and peak16 else peak32):.0%}"),
        ("x fp32", 7, lambda r: f"{r['batch_x']:.2f}"),
        ("REST 1 img/req", 15, lambda r: f"{r['many1']:.1f}"),
        ("x fp32", 7, lambda r: f"{r['many1_x']:.2f}"),
        (f"REST {batch} img/req", 16, lambda r: f"{r['many_b']:.1f}"),
        ("x fp32", 7, lambda r: f"{r['many_b_x']:.2f}")])
    auto = next((r for r in rows if r["backend"].startswith("auto")), None)
    best = max(rows, key=lambda r: r["batch_x"])
    print(f"\n'x fp32': ratio to PyTorch fp32 eager, one image per forward (median {base:.1f} img/s), measured\n"
          f"in blocks alternating with each figure. 'of peak': of the matmul peak of the backend's precision.\n"
          + (f"Target default (auto) REST p50 <= 0.65x fp32 eager forward: {auto['p50'] / auto['eager_p50']:.2f}x.\n"
             if auto else "")
          + f"Target batch throughput >= 4x fp32 eager: {best['backend']} {best['batch_x']:.2f}x bare "
          f"({best['many_b_x']:.2f}x through REST with {batch} images per request).\n"
          f"int8 calibration: {drift_line}\n"
          f"Benchmark time: {(time.perf_counter() - t_start) / 60:.1f} min")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def requests_get_backend(url: str) -> str:
    """The backend the server says it serves with (``/api/v1/models``)."""
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/api/v1/models", timeout=30) as resp:
        return json.load(resp)["models"][0]["backend"]


if __name__ == "__main__":
    sys.exit(main())
