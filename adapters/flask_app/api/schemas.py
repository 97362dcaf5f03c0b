"""Swagger models mirroring pneumo_core.inference.schema (the pydantic schema is the source)."""
from __future__ import annotations

from flask_restx import Namespace, fields

ns_models = Namespace("schemas")

model_info = ns_models.model("ModelInfo", {
    "name": fields.String(description="Model name", example="pneumo-resnet18-kermany"),
    "version": fields.String(description="Model version (training time stamp)", example="20261125-211500"),
    "threshold": fields.Float(description="Operating threshold on P(positive class)", example=0.62),
    "classes": fields.List(fields.String, description="Class names, index = label",
                           example=["NORMAL", "PNEUMONIA"]),
    "positive_class": fields.String(description="Class whose probability is reported", example="PNEUMONIA"),
    "backend": fields.String(description="Inference backend", example="torch-bf16"),
})
image_result = ns_models.model("ImageResult", {
    "name": fields.String(description="Uploaded file name", example="xray.jpeg"),
    "label": fields.String(description="Predicted class at the operating threshold", example="PNEUMONIA"),
    "probability": fields.Float(description="Calibrated probability of the positive class", example=0.93),
    "probabilities": fields.Raw(description="Calibrated probability per class",
                                example={"NORMAL": 0.07, "PNEUMONIA": 0.93}),
    "threshold": fields.Float(description="Operating threshold used", example=0.62),
    "warnings": fields.List(fields.String, description="Input-quality warnings",
                            example=["very low contrast: check exposure and windowing"]),
    "heatmap_png_base64": fields.String(description="Grad-CAM overlay, base64 PNG (with heatmap=true)"),
    "out_of_distribution": fields.Boolean(description="True when the image is unlike the training X-rays: the "
                                          "probability is not reliable (null: the model has no profile)"),
    "ood_score": fields.Float(description="Percentile of the image's distance from the training X-rays among "
                              "validation X-rays (0-100); flagged above 99.5", example=42.0),
})
predict_response = ns_models.model("PredictResponse", {
    "request_id": fields.String(description="Unique id of this request, for logs",
                                example="9f1c2a7e0b3d4c5e8a6b7c8d9e0f1a2b"),
    "model": fields.Nested(model_info, description="The model that answered"),
    "results": fields.List(fields.Nested(image_result), description="One result per uploaded image, in order"),
    "elapsed_ms": fields.Float(description="Server-side time for the request", example=41.2),
})
error = ns_models.model("Error", {
    "error": fields.String(description="Machine-readable code", example="unreadable_image"),
    "message": fields.String(description="What went wrong and what to do",
                             example="scan.jpg: cannot read image: truncated file. Upload the complete file."),
})
health_check = ns_models.model("HealthCheck", {
    "name": fields.String(description="Check name", example="model"),
    "ok": fields.Boolean(description="Whether the check passed", example=True),
    "detail": fields.String(description="What the check saw", example="pneumo-resnet18-kermany 20261125-211500"),
})
ready = ns_models.model("Ready", {
    "ready": fields.Boolean(description="True when every check passed", example=True),
    "checks": fields.List(fields.Nested(health_check), description="Model and plugin checks")})
models_response = ns_models.model("Models", {"models": fields.List(fields.Raw(
    description="Metadata, metrics, threshold and version of a loaded model"))})


def register(ns: Namespace) -> None:
    """Make the shared models known to a namespace's Swagger output."""
    for m in (model_info, image_result, predict_response, error, health_check, ready, models_response):
        ns.add_model(m.name, m)
