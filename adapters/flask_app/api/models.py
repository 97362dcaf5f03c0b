"""GET /api/v1/models: the loaded model's metadata, metrics, threshold and version."""
from __future__ import annotations

from flask import current_app
from flask_restx import Namespace, Resource

from adapters.flask_app.api import schemas

ns = Namespace("models", path="/", description="Loaded models")
schemas.register(ns)

_KEYS = ("name", "version", "created", "model", "classes", "positive_class", "preprocessing", "threshold",
         "threshold_method", "calibration", "metrics", "data", "versions", "ood", "sites")


@ns.route("/models")
class Models(Resource):
    @ns.doc(security="apikey")
    @ns.response(200, "Loaded models", schemas.models_response)
    @ns.response(401, "Missing or wrong API key", schemas.error)
    def get(self):
        """Metadata of the loaded model(s)."""
        predictor = current_app.config["PNEUMO_PREDICTOR"]
        raw = predictor.artifact.raw
        entry = {k: raw[k] for k in _KEYS if k in raw}
        entry["backend"] = predictor.info.backend
        entry["backend_selection"] = predictor.backend_selection.model_dump()
        entry["data"] = {k: v for k, v in raw.get("data", {}).items() if k != "fingerprint"}
        return {"models": [entry]}
