"""Open Inference Protocol (KServe v2) beside the REST API: endpoints in ``endpoints``, the wire
format (JSON and the binary tensor data extension) in ``protocol``."""
from __future__ import annotations

from adapters.flask_app.kserve.endpoints import PREFIX, bp
from adapters.flask_app.kserve.protocol import error_response

OPEN_PATHS = (PREFIX + "/health/live", PREFIX + "/health/ready")  # probes: open with API keys on, exactly


def owns(path: str) -> bool:
    """True for a path under /v2: its errors are answered in the protocol's form."""
    return path == PREFIX or path.startswith(PREFIX + "/")


__all__ = ["OPEN_PATHS", "PREFIX", "bp", "error_response", "owns"]
