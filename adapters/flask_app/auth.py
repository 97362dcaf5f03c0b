"""Optional API-key auth: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``."""
from __future__ import annotations

import hmac
from typing import Optional

from flask import Request


def presented_key(request: Request) -> Optional[str]:
    key = request.headers.get("X-API-Key")
    auth = request.headers.get("Authorization", "")
    if not key and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key or None


def key_id(request: Request) -> Optional[str]:
    """A stable, non-secret id of the presented key (first 12 hex of its sha256), for audit hooks."""
    import hashlib

    key = presented_key(request)
    return hashlib.sha256(key.encode()).hexdigest()[:12] if key else None


def is_authorized(request: Request, keys: frozenset[str]) -> bool:
    """True when auth is off (no keys) or the request carries one of the keys (constant-time compare)."""
    if not keys:
        return True
    key = presented_key(request)
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)
