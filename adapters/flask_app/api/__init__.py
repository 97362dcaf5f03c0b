"""REST API v1: a Flask-RESTX blueprint with Swagger UI at /api/v1/docs."""
from __future__ import annotations

from flask import Blueprint, current_app
from flask_restx import Api

from adapters.flask_app.api.errors import error_body

from adapters.flask_app.api.health import ns as health_ns
from adapters.flask_app.api.models import ns as models_ns
from adapters.flask_app.api.monitoring import ns as monitoring_ns
from adapters.flask_app.api.predict import ns as predict_ns

AUTHORIZATIONS = {"apikey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}


def make_blueprint() -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api/v1")
    api = Api(bp, version="1", title="pneumo REST API", doc="/docs", authorizations=AUTHORIZATIONS,
              description="Pneumonia classification of chest X-rays (JPEG, PNG, DICOM). "
                          "Research use only, not for clinical use. When the server has API keys "
                          "configured, send one as `X-API-Key` (or `Authorization: Bearer`).")
    for ns in (predict_ns, models_ns, monitoring_ns, health_ns):
        api.add_namespace(ns)

    # Errors raised inside resources go through Flask-RESTX: the same answer as the app's.
    @api.errorhandler(Exception)
    def _error(exc: Exception):
        return error_body(exc, current_app.config["PNEUMO_SETTINGS"])

    return bp
