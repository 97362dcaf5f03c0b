"""The RunPod handler called in-process: good jobs, every kind of bad job, concurrency."""
from __future__ import annotations

import ast
import asyncio
import base64
import dataclasses
import io
import json
import time

import pytest
from PIL import Image

from harness import REPO

import adapters.runpod.handler as rp
from adapters.runpod.inputs import InputError, decode_base64, parse_job_input
from adapters.runpod.settings import RunpodSettings
from pneumo_core import hookimpl
from pneumo_core.errors import ConfigError
from pneumo_core.inference import PredictionRejected, PredictResponse

ADAPTER = REPO / "adapters" / "runpod"


def run(raw, predictor, settings):
    return rp.process(raw, predictor, settings)


def assert_error(out: dict, code: str, *fragments: str) -> str:
    assert set(out) == {"error"}, out
    assert out["error"].startswith(f"{code}: "), out["error"]
    for fragment in fragments:
        assert fragment in out["error"], (fragment, out["error"])
    return out["error"]


def test_single_base64_image(rp_predictor, rp_settings, phantom_b64):
    out = run({"image": phantom_b64, "name": "chest.png"}, rp_predictor, rp_settings)
    response = PredictResponse.model_validate(out)  # the REST API's response schema
    assert out == json.loads(json.dumps(out))  # plain JSON
    [result] = response.results
    assert result.name == "chest.png"
    assert result.label in response.model.classes
    assert result.heatmap_png_base64 is None
    assert abs(sum(result.probabilities.values()) - 1) < 1e-6


def test_batch_and_heatmap(rp_predictor, rp_settings, phantom_b64):
    data_uri = "data:image/png;base64," + phantom_b64
    out = run({"images": [{"image": phantom_b64, "name": "a.png"}, {"image": data_uri}], "heatmap": True},
              rp_predictor, rp_settings)
    response = PredictResponse.model_validate(out)
    assert [r.name for r in response.results] == ["a.png", "image-1"]
    assert response.results[0].probability == pytest.approx(response.results[1].probability, abs=1e-6)
    overlay = Image.open(io.BytesIO(base64.b64decode(response.results[0].heatmap_png_base64)))
    assert overlay.format == "PNG"


@pytest.mark.parametrize("raw, code, fragments", [
    ({"image": "this is not base64!"}, "invalid_input", ["input.image is not valid base64"]),
    ({"image": ""}, "invalid_input", ["empty"]),
    ({"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x07" * 200).decode(), "name": "broken.png"},
     "unreadable_image", ["broken.png", "cannot read image"]),
    ({"image": base64.b64encode(b"GIF89a" + b"\0" * 64).decode(), "name": "anim.gif"},
     "unsupported_media_type", ["anim.gif", "GIF", "JPEG, PNG or DICOM"]),
    ({"image": "aGVsbG8=", "colour": "red"}, "invalid_input",
     ["unknown key 'colour' in input", "allowed keys: heatmap, image, image_url, images, name"]),
    ({"images": [{"image": "aGVsbG8=", "size": 3}]}, "invalid_input",
     ["unknown key 'size' in images[0]", "allowed keys: image, image_url, name"]),
    ({}, "invalid_input", ["exactly one of 'image' (base64), 'image_url' or 'images'", "not none"]),
    ({"heatmap": True}, "invalid_input", ["exactly one of"]),
    ({"image": "aGVsbG8=", "image_url": "https://example.org/x.png"}, "invalid_input", ["not 'image' and 'image_url'"]),
    ({"images": []}, "invalid_input", ["images: List should have at least 1 item"]),
    ({"images": [{"name": "a.png"}]}, "invalid_input", ["images[0]: give exactly one of 'image' (base64) or 'image_url'"]),
    ({"image": 12345}, "invalid_input", ["image: Input should be a valid string"]),
    ({"image": "aGVsbG8=", "heatmap": "maybe"}, "invalid_input", ["heatmap: Input should be a valid boolean"]),
    ("just a string", "invalid_input", ["input must be a JSON object", "not str"]),
    (None, "invalid_input", ["input must be a JSON object"]),
    ({"image_url": "file:///etc/passwd"}, "url_refused", ["scheme 'file' is not allowed"]),
    ({"image_url": "http://169.254.169.254/latest/meta-data"}, "url_refused", ["metadata"]),
])
def test_bad_inputs_are_error_dicts(rp_predictor, rp_settings, raw, code, fragments):
    assert_error(run(raw, rp_predictor, rp_settings), code, *fragments)


def test_too_many_images(rp_predictor, rp_settings, phantom_b64):
    settings = dataclasses.replace(rp_settings, serve=rp_settings.serve.model_copy(update={"max_batch": 2}))
    raw = {"images": [{"image": phantom_b64}] * 3}
    assert_error(run(raw, rp_predictor, settings), "invalid_input", "too many images: 3", "at most 2")


def test_image_size_limit(rp_predictor, rp_settings, phantom_b64):
    settings = dataclasses.replace(rp_settings, serve=rp_settings.serve.model_copy(update={"max_upload_mb": 1 / 1024}))  # 1 KiB
    assert_error(run({"image": phantom_b64}, rp_predictor, settings), "image_too_large", "limit 1,024")


def test_plugin_rejection(rp_predictor, rp_settings, phantom_b64):
    class Refuser:
        @hookimpl
        def pneumo_before_predict(self, request):
            assert request.source == "runpod"
            raise PredictionRejected("quota exceeded for this client")

    plugin = Refuser()
    rp_predictor.pm.register(plugin, name="test-refuser")
    try:
        out = run({"image": phantom_b64}, rp_predictor, rp_settings)
    finally:
        rp_predictor.pm.unregister(plugin)
    assert_error(out, "rejected", "quota exceeded")


def test_image_url_loopback_only_when_allowed(rp_predictor, rp_settings, image_server):
    base, _ = image_server
    raw = {"image_url": f"{base}/x.png"}
    assert_error(run(raw, rp_predictor, rp_settings), "url_refused", "loopback", "PNEUMO_ALLOW_PRIVATE_URLS")
    allowed = dataclasses.replace(rp_settings, allow_private_urls=True)
    out = run({"images": [{"image_url": f"{base}/x.png"}, {"image_url": f"{base}/redirect", "name": "r.png"}]},
              rp_predictor, allowed)
    assert [r["name"] for r in out["results"]] == ["x.png", "r.png"]
    small = dataclasses.replace(allowed, serve=allowed.serve.model_copy(update={"max_upload_mb": 2 / 1024}))  # 2 KiB: /big is larger
    assert_error(run({"image_url": f"{base}/big"}, rp_predictor, small), "image_too_large")


def test_async_handler_never_raises_and_runs_concurrently(monkeypatch, rp_predictor, rp_settings, phantom_b64):
    monkeypatch.setattr(rp, "_settings", rp_settings)
    monkeypatch.setattr(rp, "_predictor", rp_predictor)

    async def jobs():
        good = [rp.handler({"id": f"j{i}", "input": {"image": phantom_b64, "name": f"{i}.png"}}) for i in range(4)]
        bad = [rp.handler({"id": "bad", "input": {"image": "%%%"}}), rp.handler({"id": "no-input"}),
               rp.handler("not even a dict")]
        return await asyncio.gather(*good, *bad)

    *good, bad, no_input, garbage = asyncio.run(jobs())
    assert [g["results"][0]["name"] for g in good] == ["0.png", "1.png", "2.png", "3.png"]
    assert len({g["results"][0]["probability"] for g in good}) == 1
    assert_error(bad, "invalid_input", "base64")
    assert_error(no_input, "invalid_input", "input must be a JSON object")
    assert_error(garbage, "invalid_input")

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rp, "process", explode)  # an unexpected bug stays inside the job
    out = asyncio.run(rp.handler({"id": "x", "input": {"image": phantom_b64}}))
    assert_error(out, "internal_error", "logged")


def test_model_load_failure_is_a_job_error(monkeypatch, tmp_path):
    monkeypatch.setattr(rp, "_settings", RunpodSettings(artifact=tmp_path / "nowhere"))
    monkeypatch.setattr(rp, "_predictor", None)
    out = asyncio.run(rp.handler({"id": "x", "input": {"image": "aGVsbG8="}}))
    assert_error(out, "worker_not_ready", "nowhere")


def test_concurrency_modifier_reads_env(monkeypatch):
    monkeypatch.setattr(rp, "_settings", RunpodSettings.from_env({"PNEUMO_RUNPOD_CONCURRENCY": "7"}))
    assert rp.concurrency_modifier(1) == 7
    assert RunpodSettings.from_env({}).concurrency == 4


def test_settings_from_env(tmp_path, monkeypatch):
    s = RunpodSettings.from_env({"PNEUMO_MAX_IMAGE_MB": "0.5", "PNEUMO_MAX_IMAGES": "3", "PNEUMO_BACKEND": "onnx",
                                 "PNEUMO_ALLOW_PRIVATE_URLS": "true", "PNEUMO_FETCH_DEADLINE_S": "4",
                                 "PNEUMO_MAX_PIXELS": "1000000"})
    assert (s.max_image_bytes, s.serve.max_batch, s.serve.backend, s.allow_private_urls) == (512 * 1024, 3, "onnx", True)
    assert s.limits.max_pixels == 1_000_000
    policy = s.fetch_policy()
    assert (policy.max_bytes, policy.allow_private, policy.deadline_s, policy.connect_timeout_s) == (512 * 1024, True, 4, 4)
    assert RunpodSettings.from_env({}).artifact == REPO / "models" / "pneumo-resnet18-kermany"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    assert RunpodSettings.from_env({"PNEUMO_ARTIFACT": "m"}).artifact == tmp_path / "m"
    for env, message in [({"PNEUMO_MAX_IMAGE_MB": "big"}, "PNEUMO_MAX_IMAGE_MB must be a number"),
                         ({"PNEUMO_MAX_IMAGE_MB": "-1"}, "PNEUMO_MAX_IMAGE_MB='-1': Input should be greater than 0"),
                         ({"PNEUMO_MAX_IMAGES": "0"}, "PNEUMO_MAX_IMAGES='0': Input should be greater than or equal to 1"),
                         ({"PNEUMO_BACKEND": "tf"}, "PNEUMO_BACKEND='tf': Input should be 'auto', 'torch', 'onnx', 'openvino' or 'onnx-int8'"),
                         ({"PNEUMO_ALLOW_PRIVATE_URLS": "sure"}, "PNEUMO_ALLOW_PRIVATE_URLS must be 1 or 0")]:
        with pytest.raises((ValueError, ConfigError), match=message):
            RunpodSettings.from_env(env)


def test_base64_variants():
    raw = bytes(range(256))
    std = base64.b64encode(raw).decode()
    assert decode_base64(std, "x", 10_000) == raw
    assert decode_base64(base64.urlsafe_b64encode(raw).decode().rstrip("="), "x", 10_000) == raw
    assert decode_base64("\n".join(std[i:i + 76] for i in range(0, len(std), 76)), "x", 10_000) == raw
    with pytest.raises(InputError, match="data: URI must be base64"):
        decode_base64("data:image/png,abc", "x", 10_000)
    with pytest.raises(InputError, match="too large"):
        decode_base64(std, "x", 100)
    assert parse_job_input({"image": std}, 16).items()[0].image == std


def test_test_input_json_is_a_small_valid_job(rp_predictor, rp_settings):
    job = json.loads((ADAPTER / "test_input.json").read_text())
    assert (ADAPTER / "test_input.json").stat().st_size < 16_000
    out = run(job["input"], rp_predictor, rp_settings)
    assert PredictResponse.model_validate(out).results[0].name == job["input"]["name"]


def test_adapter_imports_no_plugin_module():
    for path in ADAPTER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.split(".")[0] == "plugins", f"{path.name} imports {name}"
                assert not name.startswith("adapters.flask_app"), f"{path.name} imports {name}"


def test_worker_refuses_to_start_on_bad_settings(monkeypatch, tmp_path):
    monkeypatch.setattr(rp, "_settings", None)
    monkeypatch.setattr(rp, "_predictor", None)
    monkeypatch.setenv("PNEUMO_MAX_IMAGES", "lots")
    with pytest.raises(SystemExit, match="cannot start: PNEUMO_MAX_IMAGES must be an integer"):
        rp.main()
    monkeypatch.setattr(rp, "_settings", RunpodSettings(artifact=tmp_path / "missing-model"))
    with pytest.raises(SystemExit, match="cannot start: .*missing-model"):
        rp.main()


def test_concurrent_jobs_share_forward_passes(monkeypatch, rp_predictor, rp_settings, phantom_b64):
    """Async handler + to_thread: jobs in flight together are micro-batched by the Predictor."""
    batcher = rp_predictor._batcher
    assert batcher is not None, "the worker's Predictor micro-batches by default"
    monkeypatch.setattr(rp, "_settings", rp_settings)
    monkeypatch.setattr(rp, "_predictor", rp_predictor)
    sizes, forward = [], batcher.fn

    def slow_forward(batch):  # the first forward waits until the other jobs queue up behind it
        if not sizes:
            deadline = time.monotonic() + 30
            while batcher.q.qsize() < 4 - len(batch) and time.monotonic() < deadline:
                time.sleep(0.005)
        sizes.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(batcher, "fn", slow_forward)

    async def jobs():
        return await asyncio.gather(*[rp.handler({"id": str(i), "input": {"image": phantom_b64}}) for i in range(4)])

    outs = asyncio.run(jobs())
    assert all(len(o["results"]) == 1 for o in outs)
    assert sum(sizes) == 4 and len(sizes) <= 2, sizes
