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


IMAGE_ERROR_STATUS = {"unreadable": (400, "unreadable_image"), "unsupported_format": (415, "unsupported_media_type"),
                      "too_large": (413, "image_too_large")}
