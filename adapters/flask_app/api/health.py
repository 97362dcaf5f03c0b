"""GET /api/v1/health (process alive) and GET /api/v1/ready (model loaded and warmed up)."""
from __future__ import annotations

from flask import current_app
from flask_restx import Namespace, Resource

from adapters.flask_app.api import schemas

ns = Namespace("health", path="/", description="Liveness and readiness")
schemas.register(ns)


@ns.route("/health")
class Health(Resource):
    def get(self):
        """Alive: the process answers."""
        return {"status": "ok"}


@ns.route("/ready")
class Ready(Resource):
    @ns.response(200, "Ready", schemas.ready)
    @ns.response(503, "Not ready", schemas.ready)
    def get(self):
        """Ready: the model is loaded and warmed up and every plugin health check passes."""
        checks = current_app.config["PNEUMO_PREDICTOR"].health()
        ok = all(c["ok"] for c in checks)
        return {"ready": ok, "checks": checks}, 200 if ok else 503
