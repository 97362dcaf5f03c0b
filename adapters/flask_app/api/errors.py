"""JSON error bodies: ``{"error": code, "message": text}`` with an actionable message."""
from __future__ import annotations

from flask import jsonify

from pneumo_core.imaging import ImageError
from pneumo_core.inference import IMAGE_ERROR_CODES


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str):
    resp = jsonify(error=code, message=message)
    resp.status_code = status
    return resp


def http_error_body(exc, settings) -> tuple[str, str]:
    """(code, message) for a werkzeug HTTPException; 413 says which limit was hit."""
    if exc.code == 413:
        return ("payload_too_large", f"request larger than {settings.serve.max_request_mb:g} MB; send fewer or "
                f"smaller files (each image at most {settings.serve.max_upload_mb:g} MB)")
    return ((exc.name or "error").lower().replace(" ", "_"), exc.description or "")


def http_error_headers(exc) -> dict[str, str]:
    """Headers an HTTPException's answer needs: a 405 says which methods are allowed."""
    return {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else {}


_STATUS = {"unreadable": 400, "unsupported_format": 415, "too_large": 413}


def image_error(exc: ImageError) -> ApiError:
    """The HTTP error for an unusable image: 400, 415 or 413 with the shared error code."""
    return ApiError(_STATUS.get(exc.code, 400), IMAGE_ERROR_CODES.get(exc.code, "unreadable_image"), str(exc))
