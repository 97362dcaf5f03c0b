"""The Open Inference Protocol (KServe v2) endpoints: the real tritonclient against a real
gunicorn server (API keys on), and protocol edge cases through Flask's test client."""
from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
import requests
from PIL import Image

from harness import require_module
from live_server import LiveServer

httpclient = require_module("tritonclient.http", "the KServe v2 tests need tritonclient: pip install -e '.[dev]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

KEY = "kserve-test-key"


def _auth() -> dict[str, str]:
    """The key header, a new dict each call: tritonclient adds its own headers to the dict it is given."""
    return {"X-API-Key": KEY}


# -- images and the reference answers -------------------------------------------------------
@pytest.fixture(scope="module")
def normal_jpeg() -> bytes:
    """A synthetic NORMAL phantom (96 px) encoded as JPEG."""
    from plugins.datasets.synthetic.phantom import render_phantom

    buf = io.BytesIO()
    Image.fromarray(render_phantom(0, 96, 3)).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(smoke_artifact):
    srv = LiveServer(smoke_artifact, env={"PNEUMO_API_KEYS": KEY, "PNEUMO_BACKEND": "torch",
                                          "PNEUMO_PRECISION": "fp32",
                                          "PNEUMO_MAX_REQUEST_MB": "1", "PNEUMO_MAX_UPLOAD_MB": "1"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    triton = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=60)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def model(server) -> dict:
    """The loaded model's metadata as the REST API reports it."""
    r = requests.get(server.url + "/api/v1/models", headers=_auth(), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["models"][0]


def _rest_results(server, files: list[tuple[str, bytes]]) -> list[dict]:
    r = requests.post(server.url + "/api/v1/predict", headers=_auth(), timeout=60,
                      files=[("file", (name, data, "application/octet-stream")) for name, data in files])
    assert r.status_code == 200, r.text
    return r.json()["results"]


def _image_input(*images: bytes, binary: bool = True):
    inp = httpclient.InferInput("image", [len(images)], "BYTES")
    values = images if binary else [base64.b64encode(b) for b in images]
    inp.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    return inp


def _tensor_input(batch: np.ndarray, datatype: str = "FP32", binary: bool = True):
    inp = httpclient.InferInput("tensor", list(batch.shape), datatype)
    inp.set_data_from_numpy(batch, binary_data=binary)
    return inp


def _preprocessed(model: dict, *images: bytes) -> np.ndarray:
    """The model's input for encoded images, by pneumo_core's decoder and the artifact's preprocessing."""
    from pneumo_core.data.preprocess import Preprocessing, preprocess
    from pneumo_core.imaging import load_image

    prep = Preprocessing.model_validate(model["preprocessing"])
    return np.stack([preprocess(load_image(b).pixels, prep) for b in images]).astype(np.float32)


def _infer(client, inputs, **kwargs):
    return client.infer("smoke", inputs, headers=_auth(), **kwargs)


def _status_of(call) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as err:
        call()
    return err.value.status(), err.value.message()


# -- the real client against gunicorn -------------------------------------------------------
def test_health_is_open_and_server_metadata_needs_the_key(client):
    assert client.is_server_live() and client.is_server_ready()  # no key: probes stay open
    meta = client.get_server_metadata(headers=_auth())
    assert meta["name"] == "pneumo" and "binary_tensor_data" in meta["extensions"]
    status, message = _status_of(lambda: client.get_server_metadata())
    assert status == "401" and "API key" in message


def test_model_metadata(client, model):
    meta = client.get_model_metadata("smoke", headers=_auth())
    prep = model["preprocessing"]
    assert meta["name"] == "smoke" and meta["versions"] == [model["version"]]
    assert meta["platform"] == model["backend"] == "torch-fp32"
    assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
        "image": ("BYTES", [-1]), "tensor": ("FP32", [-1, prep["in_chans"], prep["image_size"], prep["image_size"]])}
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "probabilities": ("FP32", [-1, len(model["classes"])]), "label": ("BYTES", [-1]),
        "threshold": ("FP32", [-1]), "warnings": ("BYTES", [-1])}
    assert meta["parameters"]["classes"] == model["classes"]
    assert meta["parameters"]["threshold"] == pytest.approx(model["threshold"])
    versioned = client.get_model_metadata("smoke", model_version=model["version"], headers=_auth())
    assert versioned["versions"] == [model["version"]]


def test_model_ready(client, model):
    assert client.is_model_ready("smoke", headers=_auth())
    assert client.is_model_ready("smoke", model_version=model["version"], headers=_auth())
    assert not client.is_model_ready("smoke", model_version="19700101-000000", headers=_auth())
    assert not client.is_model_ready("no-such-model", headers=_auth())
    assert not client.is_model_ready("smoke")  # no key


@pytest.mark.parametrize("binary", [True, False], ids=["binary-extension", "json-base64"])
def test_infer_image_bytes_matches_rest(client, server, phantom_png, binary):
    expected = _rest_results(server, [("x.png", phantom_png)])[0]
    outputs = None if binary else [httpclient.InferRequestedOutput(n, binary_data=False)
                                   for n in ("probabilities", "label", "threshold", "warnings")]
    result = _infer(client, [_image_input(phantom_png, binary=binary)], request_id="req-42", outputs=outputs)
    assert result.get_response()["id"] == "req-42"
    assert result.get_response()["model_version"] and result.get_response()["model_name"] == "smoke"
    probs = result.as_numpy("probabilities")
    assert probs.shape == (1, 2) and probs.dtype == np.float32
    assert probs[0] == pytest.approx([expected["probabilities"]["NORMAL"], expected["probabilities"]["PNEUMONIA"]],
                                     abs=1e-6)
    label = result.as_numpy("label")[0]
    assert (label.decode() if isinstance(label, bytes) else label) == expected["label"]
    assert result.as_numpy("threshold")[0] == pytest.approx(expected["threshold"], abs=1e-6)
    warnings = result.as_numpy("warnings")[0]
    assert json.loads(warnings) == expected["warnings"]


def test_infer_preprocessed_fp32_tensor(client, model, phantom_png):
    by_image = _infer(client, [_image_input(phantom_png)]).as_numpy("probabilities")
    batch = _preprocessed(model, phantom_png)
    for binary in (True, False):
        result = _infer(client, [_tensor_input(batch, binary=binary)])
        assert result.as_numpy("probabilities") == pytest.approx(by_image, abs=1e-5)
        assert "not run" in json.loads(result.as_numpy("warnings")[0])[0]


def test_infer_batch_of_two(client, server, model, phantom_png, normal_jpeg):
    expected = _rest_results(server, [("a.png", phantom_png), ("b.jpg", normal_jpeg)])
    want = np.array([[r["probabilities"][c] for c in model["classes"]] for r in expected], dtype=np.float32)
    by_image = _infer(client, [_image_input(phantom_png, normal_jpeg)])
    assert by_image.as_numpy("probabilities") == pytest.approx(want, abs=1e-6)
    assert [v.decode() for v in by_image.as_numpy("label")] == [r["label"] for r in expected]
    by_tensor = _infer(client, [_tensor_input(_preprocessed(model, phantom_png, normal_jpeg))])
    assert by_tensor.as_numpy("probabilities") == pytest.approx(want, abs=1e-5)
    assert by_tensor.as_numpy("threshold").shape == (2,)


def test_infer_gzip_request_body(client, phantom_png):
    plain = _infer(client, [_image_input(phantom_png)]).as_numpy("probabilities")
    gzipped = _infer(client, [_image_input(phantom_png)], request_compression_algorithm="gzip")
    assert gzipped.as_numpy("probabilities") == pytest.approx(plain, abs=1e-6)


def test_infer_errors_are_clear_4xx(client, model, phantom_png):
    batch = _preprocessed(model, phantom_png)
    status, message = _status_of(lambda: client.infer("no-such-model", [_image_input(phantom_png)], headers=_auth()))
    assert status == "404" and "no-such-model" in message and "smoke" in message
    status, message = _status_of(lambda: _infer(client, [_tensor_input(batch.astype(np.float64), "FP64")]))
    assert status == "400" and "must be FP32" in message
    status, message = _status_of(lambda: _infer(client, [_tensor_input(batch[:, :, :32, :32])]))
    assert status == "400" and "shape" in message and str(model["preprocessing"]["image_size"]) in message
    wrong_type = httpclient.InferInput("image", [1], "INT32")
    wrong_type.set_data_from_numpy(np.array([7], dtype=np.int32))
    status, message = _status_of(lambda: _infer(client, [wrong_type]))
    assert status == "400" and "must be BYTES" in message
    status, message = _status_of(lambda: _infer(client, [_image_input(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)]))
    assert status == "400" and "image[0]" in message
    other = httpclient.InferInput("pixels", [1], "BYTES")
    other.set_data_from_numpy(np.array([phantom_png], dtype=object))
    status, message = _status_of(lambda: _infer(client, [other]))
    assert status == "400" and "'pixels'" in message
    status, message = _status_of(lambda: _infer(client, [_image_input(phantom_png)],
                                                outputs=[httpclient.InferRequestedOutput("logits")]))
    assert status == "400" and "'logits'" in message
    status, message = _status_of(lambda: _infer(client, [_image_input(phantom_png)], parameters={"site": "nowhere"}))
    assert status == "400" and "unknown site 'nowhere'" in message
    status, message = _status_of(lambda: client.infer("smoke", [_image_input(phantom_png)]))  # no key
    assert status == "401"
    status, message = _status_of(lambda: _infer(client, [_image_input(b"\xff\xd8\xff" + b"\x00" * (2 * 1024 * 1024))]))
    assert status == "413" and "MB" in message
    assert client.is_server_ready(), "the server still answers"


def test_metrics_label_routes_not_paths(client, server, phantom_png):
    _infer(client, [_image_input(phantom_png)])
    with pytest.raises(InferenceServerException):
        client.infer("made-up-name-123", [_image_input(phantom_png)], headers=_auth())
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert 'endpoint="/v2/models/<name>/infer"' in text
    assert "made-up-name-123" not in text


# -- protocol edge cases through Flask's test client ----------------------------------------
AUDIT_PLUGIN = '''
from pneumo_core import hookimpl
from pneumo_core.inference import PredictionRejected
AUDIT = []

@hookimpl
def pneumo_before_predict(request):
    if len(request.images) > 1:
        raise PredictionRejected("refused by the audit plugin: one image per request")

@hookimpl
def pneumo_after_predict(request, result):
    AUDIT.append((request.source, [img.name for img in request.images], [r.label for r in result.results]))
'''


def _test_client(smoke_artifact, ood_policy: str, plugin=None):
    from adapters.flask_app.app import create_app
    from adapters.flask_app.settings import Settings
    from pneumo_core.config.schema import ServeSection
    from pneumo_core.inference import Predictor
    from pneumo_core.plugin_manager import get_plugin_manager

    pm = get_plugin_manager([str(plugin)] if plugin else [])
    predictor = Predictor(smoke_artifact, backend="torch", precision="fp32", ood_policy=ood_policy, pm=pm)
    settings = Settings(artifact=str(smoke_artifact), serve=ServeSection(max_batch=2))
    return create_app(settings, predictor).test_client(), predictor


@pytest.fixture(scope="module")
def audited(smoke_artifact, tmp_path_factory):
    """(test client, the audit plugin's module) over a predictor with the audit plugin."""
    folder = tmp_path_factory.mktemp("kserve-audit")
    (folder / "audit_plugin.py").write_text(AUDIT_PLUGIN)
    flask_client, predictor = _test_client(smoke_artifact, "flag", folder / "audit_plugin.py")
    audit = next(p for p in predictor.pm.get_plugins() if hasattr(p, "AUDIT"))
    yield flask_client, audit
    predictor.close()


@pytest.fixture(scope="module")
def flask_client(audited):
    return audited[0]


def _post(flask_client, body: bytes, header_length: int | str | None = None, **headers: str):
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return flask_client.post("/v2/models/smoke/infer", data=body, headers=headers)


def _binary_image_request(image: bytes, declared: int | None = None) -> tuple[bytes, int]:
    blob = struct.pack("<I", len(image)) + image
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(blob) if declared is None else declared}}]})
    return head.encode() + blob, len(head)


@pytest.mark.parametrize("body, header_length, needle", [
    (b"{not json", None, "not valid JSON"),
    (b"[" * 100_000, None, "not valid JSON"),
    (json.dumps({"inputs": []}).encode(), None, "inputs"),
    (json.dumps({"inputs": [{"name": "image", "shape": [-1], "datatype": "BYTES", "data": []}]}).encode(), None,
     "shape"),
    (json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}).encode(), None,
     "base64"),
    (json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["AAAA"]}]}).encode(), None,
     "1 elements"),
    (json.dumps({"inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "data": ["A", "B", "C"]}]}).encode(),
     None, "at most 2"),
    (json.dumps({"inputs": [{"name": "image", "shape": [0], "datatype": "BYTES", "data": []}]}).encode(), None,
     "at least 1"),
    (b'{"inputs": []}', 999, "does not fit"),
    (b'{"inputs": []}', "x", "number of bytes"),
], ids=["not-json", "nested-too-deep", "no-inputs", "negative-dim", "not-base64", "too-few-elements",
        "over-batch-limit", "empty-batch", "header-longer-than-body", "header-length-not-a-number"])
def test_malformed_requests_answer_400(flask_client, body, header_length, needle):
    r = _post(flask_client, body, header_length)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert needle in r.json["error"] and r.json["code"]


def test_binary_sizes_must_add_up(flask_client, phantom_png):
    body, size = _binary_image_request(phantom_png, declared=10 ** 9)
    r = _post(flask_client, body, size)
    assert r.status_code == 400 and "declares" in r.json["error"]
    body, size = _binary_image_request(phantom_png)
    r = _post(flask_client, body + b"extra", size)
    assert r.status_code == 400 and "belong to no input" in r.json["error"]
    r = _post(flask_client, body, size)
    assert r.status_code == 200, r.json
    assert r.json["outputs"][1]["name"] == "label" and r.json["outputs"][1]["shape"] == [1]


def _tensor_request(n: int, value: float = 0.0) -> bytes:
    return json.dumps({"inputs": [{"name": "tensor", "shape": [n, 1, 64, 64], "datatype": "FP32",
                                   "data": [value] * (n * 4096)}]}).encode()


def test_deployment_hooks_see_both_inputs(audited, phantom_png):
    flask_client, audit = audited
    audit.AUDIT.clear()
    assert _post(flask_client, *_binary_image_request(phantom_png)).status_code == 200
    assert _post(flask_client, _tensor_request(1)).status_code == 200
    assert [(source, names) for source, names, _ in audit.AUDIT] == [("kserve-v2", ["image[0]"]),
                                                                     ("kserve-v2", ["tensor[0]"])]
    for body in (_tensor_request(2),
                 json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                         "data": [base64.b64encode(phantom_png).decode()] * 2}]}).encode()):
        r = _post(flask_client, body)
        assert r.status_code == 403 and "one image per request" in r.json["error"]
    assert len(audit.AUDIT) == 2


def test_non_finite_tensor_is_a_client_error(flask_client):
    body = _tensor_request(1).replace(b"0.0", b"NaN", 1)
    r = _post(flask_client, body)
    assert r.status_code == 400 and "NaN" in r.json["error"]


def test_tensor_input_is_refused_when_ood_must_be_checked(smoke_artifact):
    flask_client, predictor = _test_client(smoke_artifact, "reject")
    try:
        r = _post(flask_client, _tensor_request(1))
        assert r.status_code == 422 and r.json["code"] == "out_of_distribution"
        assert "preprocessed tensor cannot be checked" in r.json["error"]
    finally:
        predictor.close()


def test_unknown_routes_and_methods_answer_in_protocol_form(flask_client):
    r = flask_client.get("/v2/models/smoke/infer")
    assert r.status_code == 405 and r.json["error"]
    r = flask_client.get("/v2/models/other")
    assert r.status_code == 404 and "'other'" in r.json["error"]
    r = _post(flask_client, b"x", **{"Content-Encoding": "br"})
    assert r.status_code == 415 and "Content-Encoding" in r.json["error"]


def test_a_compressed_body_that_inflates_like_a_bomb_is_refused(flask_client):
    import gzip

    bomb = gzip.compress(b'{"inputs": [{"name": "tensor", "datatype": "FP32", "shape": [1], "data": [' + b"0," * 2_000_000
                         + b"0]}]}")
    assert len(bomb) < 20_000
    r = _post(flask_client, bomb, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and "inflates" in r.json["error"] and "binary data" in r.json["error"]
