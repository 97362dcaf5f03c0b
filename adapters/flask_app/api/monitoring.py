"""GET /api/v1/monitoring: per-site traffic, estimated prevalence and the PPV/NPV it implies."""
from __future__ import annotations

import os

from flask import current_app
from flask_restx import Namespace, Resource

from adapters.flask_app.api import schemas

ns = Namespace("monitoring", path="/", description="Prevalence and drift of the served traffic")
schemas.register(ns)


@ns.route("/monitoring")
class Monitoring(Resource):
    @ns.doc(security="apikey")
    @ns.response(200, "Per-site summary of recent traffic", schemas.monitoring)
    @ns.response(401, "Missing or wrong API key", schemas.error)
    def get(self):
        """Recent traffic per site: predictions by label, out-of-distribution count, the pneumonia
        prevalence it implies (EM prior re-estimation) beside the training prevalence, and the
        PPV/NPV at each site's operating point for both. Each gunicorn worker keeps its own window."""
        monitor = current_app.config["PNEUMO_MONITOR"]
        return {"worker_pid": os.getpid(), "sites": monitor.summaries()}
