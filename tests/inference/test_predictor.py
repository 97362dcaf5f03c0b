"""The Predictor: backends agree, micro-batching is transparent, warnings, hooks via the CLI."""
from __future__ import annotations

import io
import shutil
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from harness import run_cli
from pneumo_core.imaging import load_image
from pneumo_core.inference import InputImage, PredictRequest, Predictor
from pneumo_core.inference.quality import quality_warnings
from plugins.datasets.synthetic.phantom import render_phantom


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> list[InputImage]:
    return [InputImage(name=f"p{i}.png", data=_png(render_phantom(i % 2, 96, 100 + i))) for i in range(8)]


@pytest.fixture(scope="module")
def onnx_artifact(smoke_artifact, tmp_path_factory):
    dst = tmp_path_factory.mktemp("onnx") / "artifact"
    shutil.copytree(smoke_artifact, dst)
    out = run_cli("export", str(dst), "--format", "onnx", timeout=600)
    assert out.returncode == 0, out.stderr
    assert (dst / "model.onnx").stat().st_size > 1000
    assert "model.onnx" in (dst / "SHA256SUMS").read_text()
    return dst


def _probs(predictor: Predictor, images) -> np.ndarray:
    return np.array([r.probability for r in predictor.predict(PredictRequest(images=images)).results])


def test_onnx_matches_pytorch(onnx_artifact, images):
    torch_p = _probs(Predictor(onnx_artifact, backend="torch", precision="fp32"), images)
    onnx_pred = Predictor(onnx_artifact, backend="onnx")
    assert onnx_pred.info.backend == "onnx"
    np.testing.assert_allclose(_probs(onnx_pred, images), torch_p, atol=1e-4)


def test_bf16_is_close_to_fp32(smoke_artifact, images):
    fp32 = _probs(Predictor(smoke_artifact, backend="torch", precision="fp32"), images)
    bf16 = Predictor(smoke_artifact, backend="torch", precision="bf16")
    assert bf16.info.backend == "torch-bf16"
    np.testing.assert_allclose(_probs(bf16, images), fp32, atol=0.05)


def test_concurrent_requests_are_batched_transparently(smoke_artifact, images):
    """While one forward runs, the requests that arrive meanwhile wait and go in as one batch.
    The first forward is held until every other request is queued, so no timing is assumed."""
    predictor = Predictor(smoke_artifact, backend="torch", precision="fp32")
    batcher = predictor._batcher
    calls, inner_fn = [], batcher.fn

    def fn(x):
        if not calls:  # hold the first forward until the other requests wait in the queue
            deadline = time.monotonic() + 30
            while batcher.q.qsize() < len(images) - len(x) and time.monotonic() < deadline:
                time.sleep(0.005)
        calls.append(len(x))
        return inner_fn(x)

    sequential = [_probs(predictor, [img])[0] for img in images]
    batcher.fn = fn
    with ThreadPoolExecutor(len(images)) as pool:
        concurrent = list(pool.map(lambda img: _probs(predictor, [img])[0], images))
    np.testing.assert_allclose(concurrent, sequential, atol=1e-5)
    assert sum(calls) == len(images) and len(calls) <= 2, f"{len(images)} concurrent requests ran as {calls}"


def test_onnx_runtime_takes_the_torch_thread_budget(onnx_artifact):
    """gunicorn's post_fork splits cores between workers through torch.set_num_threads."""
    import torch

    from pneumo_core.inference.backends import OnnxBackend

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backend = OnnxBackend(onnx_artifact / "model.onnx")
    finally:
        torch.set_num_threads(before)
    assert backend.session.get_session_options().intra_op_num_threads == 1


def test_missing_onnx_file_is_clear(smoke_artifact):
    from pneumo_core import ArtifactError

    with pytest.raises(ArtifactError, match="pneumo export ARTIFACT --format onnx-int8"):
        Predictor(smoke_artifact, backend="onnx-int8")


def test_quality_warnings():
    normal = load_image(_png(render_phantom(0, 128, 1)))
    assert quality_warnings(normal, 64) == []
    inverted = load_image(_png(255 - render_phantom(0, 128, 1)))
    assert any("inverted" in w for w in quality_warnings(inverted, 64))
    flat = load_image(_png(np.full((128, 128), 120, np.uint8) + np.random.default_rng(0).integers(0, 3, (128, 128), dtype=np.uint8)))
    assert any("nearly uniform" in w for w in quality_warnings(flat, 64))
    dim = load_image(_png((render_phantom(0, 128, 1) // 8 + 100).astype(np.uint8)))
    assert any("low contrast" in w for w in quality_warnings(dim, 64))
    tiny = load_image(_png(render_phantom(0, 40, 1)))
    assert any("small image" in w for w in quality_warnings(tiny, 224))
    wide = load_image(_png(np.random.default_rng(1).integers(0, 255, (64, 160), dtype=np.uint8)))
    assert any("aspect ratio" in w for w in quality_warnings(wide, 64))
    large_inverted = load_image(_png(255 - render_phantom(0, 1300, 1)))  # statistics on a strided view
    assert any("inverted" in w for w in quality_warnings(large_inverted, 64))
    assert quality_warnings(load_image(_png(render_phantom(0, 1300, 1))), 64) == []


@pytest.mark.parametrize("shape", [(8, 4096), (4096, 8), (9, 100), (100, 9), (40, 4096)])
def test_quality_warnings_on_thin_images(shape):
    """A strip a few pixels across leaves the inversion regions empty: that check is skipped."""
    bright = 200 + np.random.default_rng(2).integers(0, 40, shape, dtype=np.uint8)
    warnings = quality_warnings(load_image(_png(bright)), 64)
    assert any("aspect ratio" in w for w in warnings)
    assert not any("inverted" in w for w in warnings)


GATE_PLUGIN = textwrap.dedent('''
    from pneumo_core import hookimpl
    from pneumo_core.inference import PredictionRejected

    @hookimpl
    def pneumo_before_predict(request):
        if request.source == "cli" and any("blocked" in i.name for i in request.images):
            raise PredictionRejected("gate plugin: this file name is blocked")
''')


def test_reject_hook_applies_to_the_cli(smoke_artifact, tmp_path):
    """An installed plugin (entry point) refuses requests through `pneumo predict` too."""
    site = tmp_path / "site"
    (site / "gate-0.1.dist-info").mkdir(parents=True)
    (site / "gate_plugin.py").write_text(GATE_PLUGIN)
    (site / "gate-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: gate\nVersion: 0.1\n")
    (site / "gate-0.1.dist-info" / "entry_points.txt").write_text("[pneumo]\ngate = gate_plugin\n")
    ok, blocked = tmp_path / "ok.png", tmp_path / "blocked.png"
    ok.write_bytes(_png(render_phantom(1, 96, 3)))
    blocked.write_bytes(ok.read_bytes())
    env = {"PYTHONPATH": str(site)}
    assert run_cli("predict", str(smoke_artifact), str(ok), env=env).returncode == 0
    out = run_cli("predict", str(smoke_artifact), str(blocked), env=env)
    assert out.returncode == 2 and "gate plugin: this file name is blocked" in out.stderr


def test_heatmaps_do_not_disturb_concurrent_predictions(smoke_artifact, images):
    """Grad-CAM runs on a private model copy: plain requests in parallel neither change nor feed it."""
    predictor = Predictor(smoke_artifact, backend="torch", precision="fp32")
    plain = _probs(predictor, images)
    with ThreadPoolExecutor(6) as pool:
        futs = [pool.submit(predictor.predict, PredictRequest(images=[img], heatmap=i % 2 == 0))
                for i, img in enumerate(images * 3)]
        results = [f.result(timeout=120).results[0] for f in futs]
    np.testing.assert_allclose([r.probability for r in results], np.tile(plain, 3), atol=1e-5)
    assert all((r.heatmap_png_base64 is not None) == (i % 2 == 0) for i, r in enumerate(results))
    assert len(predictor._cam.cam.activations_and_grads.activations) <= 1, "no activations pile up"


def test_int8_export_serves_close_to_fp32(onnx_artifact, images, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(16):
        (calib / f"c{i}.png").write_bytes(_png(render_phantom(i % 2, 96, 300 + i)))
    (calib / "notes.txt").write_text("ignored")
    refused = run_cli("export", str(onnx_artifact), "--format", "onnx-int8", "--calibration", str(calib),
                      "--max-drift", "1e-7", timeout=600)
    assert refused.returncode == 2 and "more than the tolerance 1e-07: not written" in refused.stderr, refused.stderr
    assert not (onnx_artifact / "model.int8.onnx").exists()
    # the smoke model is barely trained: its int8 drift is larger than a real model's
    out = run_cli("export", str(onnx_artifact), "--format", "onnx-int8", "--calibration", str(calib),
                  "--max-drift", "0.15", timeout=600)
    assert out.returncode == 0, out.stderr
    assert "largest probability change" in out.stdout
    assert "model.int8.onnx" in (onnx_artifact / "SHA256SUMS").read_text()
    int8 = Predictor(onnx_artifact, backend="onnx-int8")
    assert int8.info.backend == "onnx-int8"
    fp32 = _probs(Predictor(onnx_artifact, backend="onnx"), images)
    np.testing.assert_allclose(_probs(int8, images), fp32, atol=0.15)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run_cli("export", str(onnx_artifact), "--format", "onnx-int8", "--calibration", str(empty))
    assert bad.returncode == 2 and "needs at least 8" in bad.stderr


def test_all_model_work_runs_on_one_thread(smoke_artifact, images):
    """Forwards and Grad-CAM from many request threads all run on the compute thread, so only
    one OpenMP pool exists (a second one makes every forward slower, see batcher.py)."""
    import threading

    predictor = Predictor(smoke_artifact, backend="torch", precision="fp32")
    seen: set[str] = set()
    predictor.model.register_forward_hook(lambda *_: seen.add(threading.current_thread().name))
    predictor._cam = None  # the Grad-CAM copy is made after this point, so it carries the hook
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: predictor.predict(PredictRequest(images=[images[i]], heatmap=i % 2 == 0)),
                      range(len(images))))
    assert seen == {"pneumo-compute"}
    predictor.close()


def test_a_failing_load_hook_leaves_no_compute_thread_behind(smoke_artifact, tmp_path):
    import threading

    from pneumo_core.plugin_manager import get_plugin_manager

    plugin = tmp_path / "broken_loaded_hook.py"
    plugin.write_text("from pneumo_core import hookimpl\n\n@hookimpl\ndef pneumo_predictor_loaded(predictor):\n"
                      "    raise RuntimeError('licence server unreachable')\n")
    before = sum(t.name == "pneumo-compute" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="licence server unreachable"):
        Predictor(smoke_artifact, pm=get_plugin_manager([str(plugin)]))
    assert sum(t.name == "pneumo-compute" for t in threading.enumerate()) == before


def test_health_reports_a_closed_predictor(smoke_artifact):
    predictor = Predictor(smoke_artifact, backend="torch", precision="fp32")
    assert predictor.health()[0]["ok"]
    predictor.close()
    assert not predictor.health()[0]["ok"]
    with pytest.raises(RuntimeError, match="closed"):
        predictor.predict(PredictRequest(images=[InputImage(name="x.png", data=_png(render_phantom(0, 96, 1)))]))
