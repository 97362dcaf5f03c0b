"""Open Inference Protocol (KServe v2) endpoints under /v2, on the REST API's Predictor.

The model takes one input per request:
- ``image``, BYTES [N] (or [N, 1]): encoded JPEG, PNG or DICOM files, answered exactly as
  POST /api/v1/predict answers them (same decoder, checks, hooks and limits);
- ``tensor``, FP32 [N, C, S, S]: images already preprocessed as the artifact's ``preprocessing``
  says (in the model metadata's ``parameters``). It skips the input-quality and
  out-of-distribution checks, so ``serve.ood_policy: reject`` refuses it.

Outputs: ``probabilities`` FP32 [N, K] (calibrated, in the order of ``parameters.classes``),
``label`` BYTES [N], ``threshold`` FP32 [N] and ``warnings`` BYTES [N] (a JSON list per image).
The request-level parameter ``site`` (or the ``X-Pneumo-Site`` header) picks a site's operating point.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request

from adapters.flask_app.api.errors import ApiError
from adapters.flask_app.auth import key_id
from adapters.flask_app.kserve.protocol import (InferenceRequest, InputTensor, OutputTensor, bytes_elements,
                                                encode_response, fp32_array, parse_request, request_body)
from adapters.flask_app.metrics import observe_response
from pneumo_core import __version__
from pneumo_core.inference import InputImage, Predictor, PredictRequest, PredictResponse

PREFIX = "/v2"
IMAGE_INPUT, TENSOR_INPUT = "image", "tensor"
OUTPUTS = ("probabilities", "label", "threshold", "warnings")
SOURCE = "kserve-v2"  # PredictRequest.source, for plugins

bp = Blueprint("kserve_v2", __name__, url_prefix=PREFIX)


def _predictor() -> Predictor:
    return current_app.config["PNEUMO_PREDICTOR"]


def _served(name: str, version: Optional[str]) -> Predictor:
    """The predictor when it serves ``name`` (and ``version``, when given); else 404."""
    predictor = _predictor()
    info = predictor.info
    if name != info.name:
        raise ApiError(404, "model_not_found", f"unknown model {name!r}: this server serves {info.name!r}")
    if version is not None and version != info.version:
        raise ApiError(404, "model_version_not_found",
                       f"model {name!r} has no version {version!r}: it serves version {info.version!r}")
    return predictor


def _is_ready(predictor: Predictor) -> bool:
    return all(check["ok"] for check in predictor.health())


@bp.get("")
def server_metadata() -> Response:
    """Server name, version and protocol extensions."""
    return jsonify(name="pneumo", version=__version__, extensions=["binary_tensor_data"])


@bp.get("/health/live")
def server_live() -> Response:
    """200 while the process answers."""
    return jsonify(live=True)


@bp.get("/health/ready")
def server_ready() -> tuple[Response, int]:
    """200 when the model is warmed up and every plugin health check passes, else 503."""
    ok = _is_ready(_predictor())
    return jsonify(ready=ok), 200 if ok else 503


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: Optional[str] = None) -> Response:
    """Name, versions, platform (the backend), inputs and outputs, and the model's classes,
    threshold, batch limit and preprocessing as ``parameters``."""
    predictor = _served(name, version)
    info, prep = predictor.info, predictor.prep
    settings = current_app.config["PNEUMO_SETTINGS"]
    return jsonify({
        "name": info.name, "versions": [info.version], "platform": info.backend,
        "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
                   {"name": TENSOR_INPUT, "datatype": "FP32",
                    "shape": [-1, prep.in_chans, prep.image_size, prep.image_size]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(info.classes)]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "threshold", "datatype": "FP32", "shape": [-1]},
                    {"name": "warnings", "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"classes": info.classes, "positive_class": info.positive_class, "threshold": info.threshold,
                       "max_batch_size": settings.serve.max_batch, "preprocessing": prep.model_dump(mode="json"),
                       "sites": sorted(predictor.artifact.sites)},
    })


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: Optional[str] = None) -> tuple[Response, int]:
    """200 when the model serves (as /v2/health/ready), else 503; 404 for another model."""
    predictor = _served(name, version)
    ok = _is_ready(predictor)
    return jsonify(name=name, ready=ok), 200 if ok else 503


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
def infer(name: str, version: Optional[str] = None) -> Response:
    """Classify a batch given as the ``image`` or the ``tensor`` input (see the module)."""
    predictor = _served(name, version)
    body = request_body(request.get_data(cache=False), request.headers.get("Content-Encoding"),
                        current_app.config["MAX_CONTENT_LENGTH"])
    req = parse_request(body, request.headers.get("Inference-Header-Content-Length"))
    wanted = _wanted_outputs(req)
    site = req.parameters.get("site", request.headers.get("X-Pneumo-Site"))
    if site is not None and not isinstance(site, str):
        raise ApiError(400, "bad_parameter", f"parameter 'site' must be a string, not {site!r}")
    site = (site or "").strip() or None
    if len(req.inputs) != 1:
        raise ApiError(400, "bad_request", f"send exactly one input, {IMAGE_INPUT!r} (BYTES) or {TENSOR_INPUT!r} "
                       f"(FP32), not {[t.name for t in req.inputs]}")
    tensor = req.inputs[0]
    if tensor.name == IMAGE_INPUT:
        response = _infer_images(predictor, tensor, site)
    elif tensor.name == TENSOR_INPUT:
        response = _infer_tensor(predictor, tensor, site)
    else:
        raise ApiError(400, "unknown_input", f"unknown input {tensor.name!r}: this model takes {IMAGE_INPUT!r} "
                       f"(BYTES, encoded images) or {TENSOR_INPUT!r} (FP32, preprocessed)")
    observe_response(response, current_app.config["PNEUMO_MONITOR"])
    header: dict[str, Any] = {"model_name": predictor.info.name, "model_version": predictor.info.version,
                              "id": req.id if req.id is not None else response.request_id,
                              "parameters": {"backend": response.model.backend,
                                             **({"site": response.site.name} if response.site else {})}}
    outputs = [o for o in _outputs(response) if o.name in wanted]
    data, headers = encode_response(header, outputs, {n for n, as_binary in wanted.items() if as_binary})
    return Response(data, headers=headers)


def _wanted_outputs(req: InferenceRequest) -> dict[str, bool]:
    """Output name -> whether to send it as binary data: all outputs unless ``outputs`` names some;
    binary when the output's ``binary_data`` or else the request's ``binary_data_output`` says so."""
    default = req.parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ApiError(400, "bad_parameter", f"parameter 'binary_data_output' must be true or false, not {default!r}")
    if req.outputs is None:
        return dict.fromkeys(OUTPUTS, default)
    wanted: dict[str, bool] = {}
    for out in req.outputs:
        if out.name not in OUTPUTS:
            raise ApiError(400, "unknown_output", f"unknown output {out.name!r}: this model gives {', '.join(OUTPUTS)}")
        if "classification" in out.parameters:
            raise ApiError(400, "bad_parameter", "the classification extension is not supported: read the "
                           "'label' and 'probabilities' outputs")
        as_binary = out.parameters.get("binary_data", default)
        if not isinstance(as_binary, bool):
            raise ApiError(400, "bad_parameter", f"output {out.name!r}: binary_data must be true or false")
        wanted[out.name] = as_binary
    return wanted


def _batch_size(tensor: InputTensor, allowed: str) -> int:
    """N, the first dimension, within the server's batch limit (400 otherwise)."""
    limit = current_app.config["PNEUMO_SETTINGS"].serve.max_batch
    n = tensor.shape[0] if tensor.shape else 0
    if n < 1:
        raise ApiError(400, "bad_shape", f"input {tensor.name!r} has shape {tensor.shape}: expected {allowed} "
                       "with N at least 1")
    if n > limit:
        raise ApiError(400, "too_many_images", f"input {tensor.name!r} holds {n} images: send at most {limit} "
                       "per request")
    return n


def _check_datatype(tensor: InputTensor, datatype: str) -> None:
    if tensor.datatype != datatype:
        raise ApiError(400, "bad_datatype", f"input {tensor.name!r} must be {datatype}, not {tensor.datatype!r}")


def _infer_images(predictor: Predictor, tensor: InputTensor, site: Optional[str]) -> PredictResponse:
    """Encoded images through ``Predictor.predict``, like the REST API's uploads."""
    _check_datatype(tensor, "BYTES")
    n = _batch_size(tensor, "[N] or [N, 1]")
    if tensor.shape not in ([n], [n, 1]):
        raise ApiError(400, "bad_shape", f"input {IMAGE_INPUT!r} has shape {tensor.shape}: expected [N] or "
                       "[N, 1], one encoded image per element")
    images = [InputImage(name=f"{IMAGE_INPUT}[{i}]", data=data) for i, data in enumerate(bytes_elements(tensor))]
    return predictor.predict(PredictRequest(images=images, source=SOURCE, client=key_id(request), site=site))


def _infer_tensor(predictor: Predictor, tensor: InputTensor, site: Optional[str]) -> PredictResponse:
    """A preprocessed batch through ``Predictor.predict_tensor`` (hooks, site, 422 under
    ``ood_policy: reject``: it cannot be checked)."""
    _check_datatype(tensor, "FP32")
    prep = predictor.prep
    expected = [prep.in_chans, prep.image_size, prep.image_size]
    n = _batch_size(tensor, f"[N, {', '.join(map(str, expected))}]")
    if tensor.shape != [n, *expected]:
        raise ApiError(400, "bad_shape", f"input {TENSOR_INPUT!r} has shape {tensor.shape}: this model takes "
                       f"[N, {', '.join(map(str, expected))}], preprocessed as its metadata's 'preprocessing' says")
    batch = fp32_array(tensor)
    if not np.isfinite(batch).all():
        raise ApiError(400, "bad_value", f"input {TENSOR_INPUT!r} holds NaN or infinite values")
    images = [InputImage(name=f"{TENSOR_INPUT}[{i}]", data=row.tobytes()) for i, row in enumerate(batch)]
    return predictor.predict_tensor(batch, PredictRequest(images=images, source=SOURCE, client=key_id(request),
                                                          site=site))


def _outputs(response: PredictResponse) -> list[OutputTensor]:
    results, classes = response.results, response.model.classes
    n = len(results)
    probs = np.array([[r.probabilities[c] for c in classes] for r in results], dtype=np.float32)
    return [OutputTensor("probabilities", "FP32", [n, len(classes)], probs),
            OutputTensor("label", "BYTES", [n], [r.label for r in results]),
            OutputTensor("threshold", "FP32", [n], np.array([r.threshold for r in results], dtype=np.float32)),
            OutputTensor("warnings", "BYTES", [n], [json.dumps(r.warnings) for r in results])]
