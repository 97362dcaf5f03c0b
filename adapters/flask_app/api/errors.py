"""JSON error bodies: ``{"error": code, "message": text}`` with an actionable message.

:func:`error_body` answers any exception; the app and the API blueprint (Flask-RESTX handles
errors raised in its resources itself) both register it for ``Exception``.
"""
from __future__ import annotations

import logging

from flask import jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from adapters.flask_app.slow_clients import stalled_by
from pneumo_core.errors import PneumoError

log = logging.getLogger("pneumo.web")


class ApiError(PneumoError):
    """An error of the REST layer itself (a missing field, too many files): its status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status, self.code = status, code


def error_response(status: int, code: str, message: str):
    resp = jsonify(error=code, message=message)
    resp.status_code = status
    return resp


def error_body(exc: BaseException, settings) -> tuple[dict, int, dict[str, str]]:
    """(JSON body, status, headers) for any exception. Pneumo errors carry their status and code;
    a server-side one (5xx: a broken model or artifact), and anything unexpected, is logged with
    its traceback."""
    slow = stalled_by(exc)  # werkzeug reports a stalled body as a client disconnect
    if slow is not None:
        return _body("request_timeout", f"{slow.strerror}; send the request faster or in one go"), 408, {}
    if isinstance(exc, PneumoError):
        if exc.http_status >= 500:
            log.error("%s answered %d", type(exc).__name__, exc.http_status, exc_info=exc)
        return _body(exc.code, str(exc)), exc.http_status, {}
    if isinstance(exc, HTTPException):
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else {}
        return _body(*_http_code_message(exc, settings)), exc.code or 500, headers
    log.error("unhandled error", exc_info=exc)
    return _body("internal_error", "the server failed on this request; it has been logged"), 500, {}


def _body(code: str, message: str) -> dict:
    return {"error": code, "message": message}


def _http_code_message(exc: HTTPException, settings) -> tuple[str, str]:
    """(code, message) for a werkzeug HTTPException; 413 says which limit was hit."""
    if exc.code == 413:
        if exc.description and exc.description != RequestEntityTooLarge.description:  # a count or field limit
            return ("payload_too_large", f"{exc.description}; send at most {settings.serve.max_batch} files "
                    "and only the 'file', 'heatmap' and 'site' fields")
        return ("payload_too_large", f"request larger than {settings.serve.max_request_mb:g} MB; send fewer or "
                f"smaller files (each image at most {settings.serve.max_upload_mb:g} MB)")
    return ((exc.name or "error").lower().replace(" ", "_"), exc.description or "")
