"""The REST API through Flask's test client: every endpoint and error."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from adapters.flask_app.app import create_app
from adapters.flask_app.settings import Settings
from pneumo_core.config.schema import ServeSection
from pneumo_core.imaging import ImageLimits
from pneumo_core.inference import Predictor
from pneumo_core.plugin_manager import get_plugin_manager

AUDIT_PLUGIN = '''
from pneumo_core import HealthCheck, hookimpl
from pneumo_core.inference import PredictionRejected
AUDIT = []

@hookimpl
def pneumo_before_predict(request):
    if any(img.name.startswith("reject") for img in request.images):
        raise PredictionRejected("refused by the audit plugin: file names starting with 'reject' are blocked")

@hookimpl
def pneumo_after_predict(request, result):
    AUDIT.append((request.source, [r.label for r in result.results]))

@hookimpl
def pneumo_health_checks():
    return [HealthCheck(name="audit-log", check=lambda: (True, f"{len(AUDIT)} entries"))]
'''


@pytest.fixture(scope="module")
def predictor(smoke_artifact, tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    (folder / "audit_plugin.py").write_text(AUDIT_PLUGIN)
    pm = get_plugin_manager([str(folder / "audit_plugin.py")])
    return Predictor(smoke_artifact, pm=pm, limits=ImageLimits(max_bytes=1024 * 1024, max_pixels=4_000_000))


@pytest.fixture(scope="module")
def client(predictor, smoke_artifact):
    settings = Settings(artifact=str(smoke_artifact), serve=ServeSection(max_upload_mb=1, max_request_mb=2, max_batch=4))
    return create_app(settings, predictor).test_client()


def _post(client, files, heatmap=False, headers=None):
    data = {"file": [(io.BytesIO(b), n) for n, b in files]}
    if heatmap:
        data["heatmap"] = "true"
    return client.post("/api/v1/predict", data=data, content_type="multipart/form-data", headers=headers or {})


def test_predict_one_image(client, phantom_png):
    r = _post(client, [("xray.png", phantom_png)])
    assert r.status_code == 200, r.json
    body = r.json
    assert body["model"]["name"] == "smoke" and body["model"]["version"]
    assert 0 < body["model"]["threshold"] < 1
    res = body["results"][0]
    assert res["name"] == "xray.png" and res["label"] in ("NORMAL", "PNEUMONIA")
    assert res["probabilities"]["PNEUMONIA"] == pytest.approx(res["probability"])
    assert res["label"] == ("PNEUMONIA" if res["probability"] >= res["threshold"] else "NORMAL")
    assert res["heatmap_png_base64"] is None


def test_batch_with_heatmap_and_warnings(client, phantom_png):
    import base64

    colour = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)  # < half the 64 px input
    Image.fromarray(rgb).save(colour, format="JPEG")
    r = _post(client, [("a.png", phantom_png), ("colour.jpg", colour.getvalue())], heatmap=True)
    assert r.status_code == 200, r.json
    a, c = r.json["results"]
    png = base64.b64decode(a["heatmap_png_base64"])
    assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).size == (64, 64)
    assert any("colour image" in w for w in c["warnings"])
    assert any("small image" in w for w in c["warnings"])


@pytest.mark.parametrize("name, data, status, code", [
    ("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "unreadable_image"),
    ("x.gif", b"GIF89a" + b"\x00" * 40, 415, "unsupported_media_type"),
    ("x.txt", b"hello world, not an image", 415, "unsupported_media_type"),
    ("empty.png", b"", 400, "unreadable_image"),
])
def test_bad_images(client, name, data, status, code):
    r = _post(client, [(name, data)])
    assert r.status_code == status
    assert r.json["error"] == code and name in r.json["message"]


def test_request_errors(client, phantom_png):
    r = client.post("/api/v1/predict", data=phantom_png, content_type="image/png")
    assert r.status_code == 415 and "multipart/form-data" in r.json["message"]
    r = client.post("/api/v1/predict", data={}, content_type="multipart/form-data")
    assert r.status_code == 400 and r.json["error"] == "no_file"
    r = _post(client, [(f"{i}.png", phantom_png) for i in range(5)])
    assert r.status_code == 400 and "at most 4" in r.json["message"]
    big = _post(client, [("big.png", b"\x89PNG" + b"\x00" * (6 * 1024 * 1024))])
    assert big.status_code == 413 and big.json["error"] == "payload_too_large"
    one_mb = _post(client, [("big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (1024 * 1024 + 10))])
    assert one_mb.status_code == 413 and one_mb.json["error"] == "image_too_large" and "big.png" in one_mb.json["message"]
    assert client.get("/api/v1/nope").status_code == 404
    wrong_method = client.get("/api/v1/predict")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    page_post = client.post("/metrics")  # outside the API: the app's own error handler
    assert page_post.status_code == 405 and "GET" in page_post.headers["Allow"] and page_post.json["error"]


def test_plugin_hooks_audit_and_reject(client, phantom_png, predictor):
    module = predictor.pm.get_plugin("audit_plugin")
    before = len(module.AUDIT)
    r = _post(client, [("reject-me.png", phantom_png)])
    assert r.status_code == 403 and "audit plugin" in r.json["message"]
    assert _post(client, [("ok.png", phantom_png)]).status_code == 200
    assert len(module.AUDIT) == before + 1 and module.AUDIT[-1][0] == "rest"
    ready = client.get("/api/v1/ready").json
    assert ready["ready"] is True
    assert {c["name"] for c in ready["checks"]} == {"model", "audit-log"}


def test_models_health_ready(client):
    models = client.get("/api/v1/models").json["models"]
    m = models[0]
    assert m["name"] == "smoke" and m["classes"] == ["NORMAL", "PNEUMONIA"]
    assert "val" in m["metrics"] and "auc" in m["metrics"]["val"] and 0 < m["threshold"] < 1
    sel = m["backend_selection"]  # what the server chose, and why
    assert sel["chosen"] == m["backend"] and sel["reason"]
    assert all({"name", "status", "p50_ms", "max_prob_change", "note"} <= set(c) for c in sel["candidates"])
    assert client.get("/api/v1/health").json == {"status": "ok"}


def test_metrics_count_requests_and_predictions(client, phantom_png):
    _post(client, [("m.png", phantom_png)])
    _post(client, [("m.txt", b"text")])
    text = client.get("/metrics").get_data(as_text=True)
    assert 'pneumo_http_requests_total{endpoint="/api/v1/predict",method="POST",status="200"}' in text
    assert 'pneumo_http_requests_total{endpoint="/api/v1/predict",method="POST",status="415"}' in text
    assert "pneumo_http_request_seconds_bucket" in text
    assert "pneumo_predictions_total{label=" in text


def test_swagger_documents_every_field(client):
    spec = client.get("/api/v1/swagger.json").json
    assert {"/predict", "/models", "/health", "/ready"} <= set(spec["paths"])
    post = spec["paths"]["/predict"]["post"]
    assert {"200", "400", "401", "413", "415"} <= set(post["responses"])
    params = {p["name"]: p for p in post["parameters"]}
    assert params["file"]["type"] == "file" and params["file"]["in"] == "formData"
    for model in ("PredictResponse", "ImageResult", "ModelInfo", "Error"):
        for name, prop in spec["definitions"][model]["properties"].items():
            assert prop.get("description") or prop.get("$ref") or prop.get("items"), f"{model}.{name} undocumented"
    assert spec["definitions"]["ImageResult"]["properties"]["label"]["example"] == "PNEUMONIA"
    from pneumo_core.inference.schema import ImageResult, ModelInfo, PredictResponse, SiteInfo

    for model in (PredictResponse, ImageResult, ModelInfo, SiteInfo):  # generated: no drift possible
        assert set(spec["definitions"][model.__name__]["properties"]) == set(model.model_fields), model.__name__
    assert spec["definitions"]["ImageResult"]["properties"]["ood_score"]["x-nullable"] is True
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and b"swagger" in docs.data.lower()


def test_index_page(client):
    page = client.get("/").get_data(as_text=True)
    assert "Not for clinical use" in page and 'type="file"' in page and "/api/v1/docs" in page
    assert client.get("/static/app.js").status_code == 200


def test_api_key_auth(predictor, smoke_artifact, phantom_png):
    settings = Settings(artifact=str(smoke_artifact), api_keys=frozenset({"s3cret"}))
    c = create_app(settings, predictor).test_client()
    r = _post(c, [("a.png", phantom_png)])
    assert r.status_code == 401 and "X-API-Key" in r.json["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert _post(c, [("a.png", phantom_png)], headers={"X-API-Key": "wrong"}).status_code == 401
    assert _post(c, [("a.png", phantom_png)], headers={"X-API-Key": "s3cret"}).status_code == 200
    assert _post(c, [("a.png", phantom_png)], headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/v1/models").status_code == 401
    assert c.get("/api/v1/health").status_code == 200 and c.get("/api/v1/ready").status_code == 200
    assert 'id="api-key"' in c.get("/").get_data(as_text=True)


@pytest.mark.parametrize("path, open_", [
    ("/", True), ("/api/v1/health", True), ("/api/v1/ready", True), ("/api/v1/docs", True),
    ("/api/v1/swagger.json", True), ("/metrics", True), ("/v2/health/live", True), ("/v2/health/ready", True),
    ("/api/v1/models", False), ("/api/v1/monitoring", False), ("/v2", False), ("/v2/models/smoke", False),
    ("/api/v1/healthz", False), ("/api/v1/ready-not", False), ("/api/v1/docsx", False),
    ("/api/v1/health/../models", False), ("/v2/health/../models/smoke", False), ("/v2/health/livez", False),
])
def test_the_readme_s_open_paths_are_open_with_keys_on_and_nothing_else(predictor, smoke_artifact, path, open_):
    settings = Settings(artifact=str(smoke_artifact), api_keys=frozenset({"s3cret"}))
    c = create_app(settings, predictor).test_client()
    status = c.get(path).status_code
    if open_:
        assert status in (200, 308), f"{path} must answer without a key, got {status}"
    else:
        assert status == 401, f"{path} must ask for a key, got {status}"
        assert c.get(path, headers={"X-API-Key": "s3cret"}).status_code != 401


def test_settings_from_env(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {name: synthetic}\nserve: {max_upload_mb: 3, max_batch: 2}\n")
    s = Settings.from_env({"PNEUMO_CONFIG": str(cfg), "PNEUMO_API_KEYS": "a, b", "PNEUMO_ARTIFACT": "x"})
    assert s.serve.max_upload_mb == 3 and s.max_upload_bytes == 3 * 1024 * 1024
    assert s.api_keys == frozenset({"a", "b"}) and s.artifact == "x"
    assert Settings.from_env({}).api_keys == frozenset()


def test_bad_heatmap_flag_is_a_400(client, phantom_png):
    r = client.post("/api/v1/predict", data={"file": (io.BytesIO(phantom_png), "x.png"), "heatmap": "maybe"},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and "heatmap must be true or false" in r.json["message"]


def test_invented_methods_do_not_create_metric_series(client):
    for i in range(50):
        assert client.open("/api/v1/health", method=f"BREW{i}").status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    series = [line for line in text.splitlines() if line.startswith("pneumo_http_requests_total{")]
    assert not any("BREW" in line for line in series)
    other = [line for line in series if 'method="other"' in line and 'status="405"' in line]
    assert other and float(other[0].rsplit(" ", 1)[1]) >= 50


def test_rest_and_runpod_read_the_same_serving_variables(smoke_artifact):
    from adapters.runpod.settings import RunpodSettings

    env = {"PNEUMO_MAX_IMAGE_MB": "3", "PNEUMO_MAX_PIXELS": "2000000", "PNEUMO_MAX_IMAGES": "5",
           "PNEUMO_BACKEND": "onnx", "PNEUMO_PRECISION": "fp32", "PNEUMO_ARTIFACT": str(smoke_artifact)}
    rest, worker = Settings.from_env(env).serve, RunpodSettings.from_env(env).serve
    assert rest == worker
    assert (rest.max_upload_mb, rest.max_pixels, rest.max_batch, rest.backend, rest.precision) == (3, 2_000_000, 5,
                                                                                                   "onnx", "fp32")
    old = Settings.from_env({"PNEUMO_MAX_UPLOAD_MB": "2"}).serve.max_upload_mb
    assert old == 2, "the REST adapter's old name still works"


def test_too_many_parts_says_so_not_that_the_body_is_too_big(client, phantom_png):
    fields = {f"note{i}": "x" for i in range(200)}
    resp = client.post("/api/v1/predict", data={"file": (io.BytesIO(phantom_png), "x.png"), **fields},
                       content_type="multipart/form-data")
    assert resp.status_code == 413
    message = resp.get_json()["message"]
    assert "form parts" in message and "at most 4 files" in message and "larger than" not in message


def test_a_request_is_answered_as_a_whole(client, phantom_png, predictor):
    """README: one unusable file fails the request, names the file, and classifies nothing."""
    assert _post(client, [("good.png", phantom_png)]).status_code == 200  # the counter has a series
    before = client.get("/metrics").get_data(as_text=True)
    r = _post(client, [("good.png", phantom_png), ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)])
    assert r.status_code == 400 and "broken.png" in r.json["message"] and "results" not in r.json
    after = client.get("/metrics").get_data(as_text=True)
    count = [line for line in after.splitlines() if line.startswith("pneumo_predictions_total")]
    assert count and count == [line for line in before.splitlines() if line.startswith("pneumo_predictions_total")], \
        "no image of a refused request is counted as classified"


def test_the_readme_s_default_limits(smoke_artifact, predictor, phantom_png):
    serve = ServeSection()
    assert (serve.max_batch, serve.max_upload_mb, serve.max_request_mb, serve.max_pixels) == (16, 20, 50, 40_000_000)
    app = create_app(Settings(artifact=str(smoke_artifact)), predictor)
    # 50 MB of files, plus room for the multipart headers around them
    assert 50 * 1024 * 1024 <= app.config["MAX_CONTENT_LENGTH"] < 51 * 1024 * 1024
    r = _post(app.test_client(), [(f"{i}.png", phantom_png) for i in range(17)])
    assert r.status_code == 400 and "at most 16" in r.json["message"]
