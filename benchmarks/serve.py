"""Serving: REST latency and throughput beside the bare model forward of the same backend.

For each backend (PyTorch fp32, PyTorch bf16, ONNX Runtime fp32 and int8) it starts a real gunicorn server
on a free loopback port, measures single-image latency p50/p99 at concurrency 1 and throughput
at concurrency 1, 4 and 8, and, in this same process, the bare forward of that backend on one
preprocessed image. Targets on a 2-core CPU at 224 px: REST p50 <= 1.3x the bare forward;
the fastest backend's throughput >= 4x PyTorch fp32 eager (one image per forward).

    python benchmarks/serve.py [--artifact models/pneumo-resnet18-kermany] [--requests 40]
                               [--calibration DIR]   # int8 calibration images (default: Kermany
                                                     # train images when present, else phantoms)
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "serving")]

import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from live_server import LiveServer  # noqa: E402  (the test suite's gunicorn launcher)
from pneumo_core.artifact import build_model, load_artifact  # noqa: E402
from pneumo_core.data.preprocess import preprocess  # noqa: E402
from pneumo_core.inference.backends import OnnxBackend, TorchBackend  # noqa: E402


def test_image(size: int = 224) -> bytes:
    from plugins.datasets.synthetic.phantom import render_phantom

    buf = io.BytesIO()
    Image.fromarray(render_phantom(1, size, 11)).save(buf, format="PNG")
    return buf.getvalue()


def bare_forward(backend, x: np.ndarray, n: int) -> list[float]:
    for _ in range(5):
        backend(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        backend(x)
        times.append(time.perf_counter() - t0)
    return times


def rest_run(url: str, image: bytes, concurrency: int, total: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per = total // concurrency

    def client():
        s = requests.Session()
        for _ in range(per):
            t0 = time.perf_counter()
            r = s.post(url + "/api/v1/predict", files={"file": ("x.png", image, "image/png")}, timeout=120)
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            with lock:
                latencies.append(dt)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(latencies) / (time.perf_counter() - t0)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=str(REPO / "models" / "pneumo-resnet18-kermany"))
    p.add_argument("--requests", type=int, default=40, help="requests per concurrency level")
    p.add_argument("--calibration", default=str(REPO.parent / "shared" / "data" / "kermany-cxr" / "train"),
                   help="images for int8 calibration (phantoms when the folder is missing)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pneumo-bench-"))
    art_dir = work / "artifact"
    shutil.copytree(args.artifact, art_dir)
    calib = Path(args.calibration) if args.calibration else None
    if calib is None or not calib.is_dir():
        calib = work / "calibration"
        calib.mkdir()
        for i in range(64):
            from plugins.datasets.synthetic.phantom import render_phantom

            Image.fromarray(render_phantom(i % 2, 224, 5000 + i)).save(calib / f"{i}.png")
    subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", "export", str(art_dir)], check=True,
                   capture_output=True)
    int8 = subprocess.run([sys.executable, "-m", "pneumo_core.cli.main", "export", str(art_dir), "--format",
                           "onnx-int8", "--calibration", str(calib)], check=True, capture_output=True, text=True)
    drift_line = int8.stdout.strip().splitlines()[-1]
    art = load_artifact(art_dir)
    image = test_image(art.meta.preprocessing.image_size)
    x = preprocess(np.asarray(Image.open(io.BytesIO(image))), art.meta.preprocessing)[None]
    backends = {"torch-fp32": ("torch", "fp32"), "torch-bf16": ("torch", "bf16"), "onnx": ("onnx", "fp32"),
                "onnx-int8": ("onnx-int8", "fp32")}
    rows = []
    for label, (kind, precision) in backends.items():
        if kind.startswith("onnx"):
            bare = OnnxBackend(art_dir / ("model.onnx" if kind == "onnx" else "model.int8.onnx"), name=kind)
        else:
            bare = TorchBackend(build_model(art), precision)
        bare_t = bare_forward(bare, x, args.requests)
        batch = np.repeat(x, 8, axis=0)
        batch_t = bare_forward(bare, batch, max(5, args.requests // 4))
        del bare
        srv = LiveServer(art_dir, env={"PNEUMO_BACKEND": kind, "PNEUMO_PRECISION": precision,
                                       "PNEUMO_THREADS": "8"}).start()
        try:
            rest_run(srv.url, image, 1, 5)  # warm-up
            lat1, thr1 = rest_run(srv.url, image, 1, args.requests)
            _, thr4 = rest_run(srv.url, image, 4, args.requests)
            _, thr8 = rest_run(srv.url, image, 8, args.requests)
        finally:
            srv.stop()
        rows.append(dict(backend=label, bare_p50=pct(bare_t, 50), bare_ips=1 / statistics.median(bare_t),
                         batch_ips=8 / statistics.median(batch_t),
                         p50=pct(lat1, 50), p99=pct(lat1, 99), thr1=thr1, thr4=thr4, thr8=thr8))
    base = next(r for r in rows if r["backend"] == "torch-fp32")["bare_ips"]
    print(f"\nServing — {art.meta.name}, {art.meta.preprocessing.image_size} px, 1 gunicorn worker, "
          f"{os.cpu_count()} cores, {args.requests} requests per level")
    head = (f"{'backend':<12}{'bare p50 ms':>12}{'REST p50 ms':>12}{'REST p99 ms':>12}{'p50 ratio':>10}"
            f"{'bare b=8 img/s':>15}{'x fp32':>8}{'REST img/s c=1':>15}{'c=4':>7}{'c=8':>7}{'x fp32':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['backend']:<12}{r['bare_p50']:>12.1f}{r['p50']:>12.1f}{r['p99']:>12.1f}{r['p50'] / r['bare_p50']:>10.2f}"
              f"{r['batch_ips']:>15.1f}{r['batch_ips'] / base:>8.2f}{r['thr1']:>15.1f}{r['thr4']:>7.1f}{r['thr8']:>7.1f}"
              f"{r['thr8'] / base:>8.2f}")
    best = max(rows, key=lambda r: r["batch_ips"])
    print(f"\n'x fp32': ratio to PyTorch fp32 eager, one image per forward ({base:.1f} img/s).\n"
          f"Targets: REST p50 <= 1.3x the bare forward; fastest backend's batch throughput >= 4x fp32 eager: "
          f"{best['backend']} {best['batch_ips'] / base:.2f}x bare, {best['thr8'] / base:.2f}x through REST at c=8.\n"
          f"int8 calibration ({calib}): {drift_line}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
