"""Swagger models. The prediction response's are generated from pneumo_core.inference.schema, the
pydantic schema every adapter answers with; the REST layer's own (errors, health, monitoring) are
written here."""
from __future__ import annotations

import json

from flask_restx import Namespace, fields
from flask_restx.model import SchemaModel
from pydantic import BaseModel

from pneumo_core.inference.schema import PredictResponse

ns_models = Namespace("schemas")

def _swagger2(schema: dict) -> dict:
    """A pydantic (JSON Schema 2020-12) schema in Swagger 2.0's dialect: ``Optional[X]`` becomes X
    with ``x-nullable``, ``examples`` becomes ``example``, references point at ``definitions``."""
    if isinstance(schema, list):
        return [_swagger2(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _swagger2(v) for k, v in schema.items() if k not in ("$defs", "title", "examples", "anyOf")}
    options = schema.get("anyOf")
    if options:
        real = [o for o in options if o.get("type") != "null"]
        if len(real) == 1:
            out.update(_swagger2(real[0]))
            out["x-nullable"] = True
        else:
            out["anyOf"] = _swagger2(options)
    if schema.get("examples"):
        out["example"] = schema["examples"][0]
    return out


class _GeneratedModel(SchemaModel):
    """A JSON-schema model whose referenced models flask-restx must also publish: restx publishes
    a model's ``__parents__``, which for this class do not turn its schema into an ``allOf``."""

    @property
    def __schema__(self) -> dict:
        return self._schema


def _from_pydantic(ns: Namespace, *models: type[BaseModel]) -> dict[str, SchemaModel]:
    """Swagger models generated from the pydantic response schema, the one source of truth."""
    out: dict[str, SchemaModel] = {}
    for model in models:
        schema = model.model_json_schema(ref_template="#/definitions/{model}")
        for name, sub in {**schema.get("$defs", {}), model.__name__: schema}.items():
            out.setdefault(name, ns.add_model(name, _GeneratedModel(name, _swagger2(sub))))
    for m in out.values():
        text = json.dumps(m._schema)
        m.__parents__ = [d for n, d in out.items() if f'"#/definitions/{n}"' in text]
    return out


_generated = _from_pydantic(ns_models, PredictResponse)
model_info, image_result, site_info, predict_response = (
    _generated[n] for n in ("ModelInfo", "ImageResult", "SiteInfo", "PredictResponse"))
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
site_traffic = ns_models.model("SiteTraffic", {
    "recent": fields.Integer(description="Results in this worker's window"),
    "window": fields.Integer(description="Window length (most recent results kept)"),
    "predicted_positive": fields.Integer, "predicted_negative": fields.Integer,
    "out_of_distribution": fields.Integer(description="Flagged results in the window"),
    "prevalence_estimate": fields.Float(description="Pneumonia prevalence estimated from the window (EM)"),
    "training_prevalence": fields.Float(description="Prevalence the probabilities were calibrated under"),
    "threshold": fields.Float, "sensitivity": fields.Float, "specificity": fields.Float,
    "ppv": fields.Float(description="PPV implied at the estimated prevalence"),
    "npv": fields.Float(description="NPV implied at the estimated prevalence"),
    "ppv_at_training_prevalence": fields.Float, "npv_at_training_prevalence": fields.Float,
})
monitoring = ns_models.model("Monitoring", {
    "worker_pid": fields.Integer(description="The gunicorn worker that answered (each keeps its own window)"),
    "sites": fields.Raw(description="SiteTraffic per site ('default': the model's own operating point)"),
})
models_response = ns_models.model("Models", {"models": fields.List(fields.Raw(
    description="Metadata, metrics, threshold and version of a loaded model"))})


def register(ns: Namespace) -> None:
    """Make the shared models known to a namespace's Swagger output."""
    for m in (*_generated.values(), error, health_check, ready, site_traffic, monitoring,
              models_response):
        ns.add_model(m.name, m)
