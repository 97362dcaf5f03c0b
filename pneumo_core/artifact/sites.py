"""Per-site operating points: a site's own threshold and temperature, stored in ``model.json``
under ``sites`` (so SHA256SUMS covers them), each versioned and hashed."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pneumo_core.errors import PneumoError

SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class UnknownSiteError(PneumoError):
    code = "unknown_site"
    http_status = 400


class SiteProfile(BaseModel):
    """One site's operating point, as fitted by ``pneumo calibrate``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    name: str
    version: int = Field(ge=1, description="1 for the first fit, +1 at every refit of the same site.")
    threshold: float = Field(gt=0, lt=1)
    temperature: float = Field(gt=0)
    sha256: str = Field(description="Digest of the profile's other fields (canonical JSON).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SITE_NAME.match(v):
            raise ValueError(f"site name {v!r}: use 1-64 letters, digits, '.', '_' or '-'")
        return v


def profile_digest(fields: dict[str, Any]) -> str:
    body = {k: v for k, v in fields.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def parse_sites(raw: dict[str, Any]) -> dict[str, SiteProfile]:
    """The ``sites`` of a model.json, each checked against its own digest (ValueError if not)."""
    out = {}
    for name, fields in (raw.get("sites") or {}).items():
        profile = SiteProfile.model_validate(fields)
        if profile.name != name or profile_digest(fields) != profile.sha256:
            raise ValueError(f"site profile {name!r} does not match its sha256: it was edited by hand")
        out[name] = profile
    return out


def resolve_site(sites: dict[str, SiteProfile], name: str) -> SiteProfile:
    """The named profile, or UnknownSiteError listing the known ones."""
    if name in sites:
        return sites[name]
    known = ", ".join(sorted(sites)) or "none: fit one with `pneumo calibrate ARTIFACT DATA --site NAME`"
    raise UnknownSiteError(f"unknown site {name!r}; this model's sites: {known}")
