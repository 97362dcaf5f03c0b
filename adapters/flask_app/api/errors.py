"""JSON error bodies: ``{"error": code, "message": text}`` with an actionable message."""
from __future__ import annotations

from flask import jsonify

import logging

from werkzeug.exceptions import RequestEntityTooLarge

from pneumo_core.errors import PneumoError


class ApiError(PneumoError):
    """An error of the REST layer itself (a missing field, too many files): its status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status, self.code = status, code


def pneumo_error_body(exc: PneumoError) -> tuple[dict, int]:
    """The JSON body and status of any pneumo error: the error class carries both. A server-side
    one (5xx: a broken model or artifact) is logged with its traceback."""
    if exc.http_status >= 500:
        logging.getLogger("pneumo.web").error("%s answered %d", type(exc).__name__, exc.http_status, exc_info=exc)
    return {"error": exc.code, "message": str(exc)}, exc.http_status


def error_response(status: int, code: str, message: str):
    resp = jsonify(error=code, message=message)
    resp.status_code = status
    return resp


def http_error_body(exc, settings) -> tuple[str, str]:
    """(code, message) for a werkzeug HTTPException; 413 says which limit was hit."""
    if exc.code == 413:
        if exc.description and exc.description != RequestEntityTooLarge.description:  # a count or field limit
            return ("payload_too_large", f"{exc.description}; send at most {settings.serve.max_batch} files "
                    "and only the 'file' and 'heatmap' fields")
        return ("payload_too_large", f"request larger than {settings.serve.max_request_mb:g} MB; send fewer or "
                f"smaller files (each image at most {settings.serve.max_upload_mb:g} MB)")
    return ((exc.name or "error").lower().replace(" ", "_"), exc.description or "")


def http_error_headers(exc) -> dict[str, str]:
    """Headers an HTTPException's answer needs: a 405 says which methods are allowed."""
    return {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else {}
