"""Application factory: ``create_app(settings, predictor)`` builds the same app for tests and gunicorn."""
from __future__ import annotations

import time
from typing import Optional

from flask import Flask, Response, g, render_template, request

from adapters.flask_app import kserve
from adapters.flask_app.api import make_blueprint
from adapters.flask_app.api.errors import error_body, error_response
from adapters.flask_app.auth import is_authorized
from adapters.flask_app.metrics import LATENCY, REQUESTS, exposition, method_label
from adapters.flask_app.multipart import PneumoRequest
from adapters.flask_app.settings import Settings
from pneumo_core.config.serving import image_limits
from pneumo_core.inference import Predictor
from pneumo_core.monitoring import TrafficMonitor
from pneumo_core.monitoring.traffic import operating_points

# open exactly (the Swagger UI's assets are under /swaggerui/, outside /api/)
_OPEN_PATHS = ("/api/v1/health", "/api/v1/ready", "/api/v1/docs", "/api/v1/swagger.json")


def _needs_key(path: str) -> bool:
    """The REST API and the KServe v2 endpoints need a key (when keys are set), but not their probes and docs."""
    if kserve.owns(path):
        return path not in kserve.OPEN_PATHS
    return path.startswith("/api/") and path not in _OPEN_PATHS


def create_app(settings: Optional[Settings] = None, predictor: Optional[Predictor] = None) -> Flask:
    """Build the app; loads the predictor from ``settings.artifact`` unless one is given."""
    settings = settings or Settings.from_env()
    if predictor is None:
        predictor = Predictor(settings.artifact, backend=settings.serve.backend,
                              precision=settings.serve.precision, limits=image_limits(settings.serve),
                              ood_policy=settings.serve.ood_policy)
    monitor = TrafficMonitor(operating_points(predictor.artifact.raw, predictor.artifact.sites))
    app = Flask(__name__)
    app.request_class = PneumoRequest
    # Body limit: the request limit plus room for the multipart envelope of the files. A request
    # has the files and one field: a few times that many parts is plenty.
    app.config.update(MAX_CONTENT_LENGTH=settings.max_request_bytes + 64 * 1024,
                      MAX_FORM_PARTS=max(64, 4 * settings.serve.max_batch),
                      PNEUMO_SETTINGS=settings, PNEUMO_PREDICTOR=predictor, PNEUMO_MONITOR=monitor, RESTX_MASK_SWAGGER=False,
                      ERROR_404_HELP=False, JSON_SORT_KEYS=False)
    app.register_blueprint(make_blueprint())
    app.register_blueprint(kserve.bp)

    @app.before_request
    def _start():
        g.t0 = time.perf_counter()
        path = request.path
        if _needs_key(path) and not is_authorized(request, settings.api_keys):
            answer = kserve.error_response if kserve.owns(path) else error_response
            resp = answer(401, "unauthorized", "missing or wrong API key: send it as the X-API-Key header")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="pneumo"'
            return resp
        return None

    @app.after_request
    def _finish(resp: Response):
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        REQUESTS.labels(endpoint=endpoint, method=method_label(request.method), status=str(resp.status_code)).inc()
        LATENCY.labels(endpoint=endpoint, status=str(resp.status_code)).observe(time.perf_counter() - g.get("t0", time.perf_counter()))
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        return resp

    @app.errorhandler(Exception)
    def _error(exc: Exception):
        body, status, headers = error_body(exc, settings)
        answer = kserve.error_response if kserve.owns(request.path) else error_response
        resp = answer(status, body["error"], body["message"])
        resp.headers.update(headers)
        return resp

    @app.get("/")
    def index():
        return render_template("index.html", info=predictor.info, auth=bool(settings.api_keys),
                               max_mb=settings.serve.max_upload_mb)

    @app.get("/metrics")
    def metrics():
        body, ctype = exposition()
        return Response(body, content_type=ctype)

    return app
