"""JSON error bodies: ``{"error": code, "message": text}`` with an actionable message."""
from __future__ import annotations

from flask import jsonify


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


IMAGE_ERROR_STATUS = {"unreadable": (400, "unreadable_image"), "unsupported_format": (415, "unsupported_media_type"),
                      "too_large": (413, "image_too_large")}
