"""Serving settings: from a config's ``serve`` section and environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from pneumo_core.config import read_yaml
from pneumo_core.config.schema import ServeSection

from pneumo_core import BUNDLED_ARTIFACT as DEFAULT_ARTIFACT


@dataclass
class Settings:
    """What the app needs. Environment: PNEUMO_ARTIFACT, PNEUMO_CONFIG, PNEUMO_BACKEND, PNEUMO_PRECISION,
    PNEUMO_MAX_UPLOAD_MB, PNEUMO_API_KEYS (comma-separated; auth is on when set)."""

    artifact: str = DEFAULT_ARTIFACT
    serve: ServeSection = field(default_factory=ServeSection)
    api_keys: frozenset[str] = frozenset()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.serve.max_upload_mb * 1024 * 1024)

    @property
    def max_request_bytes(self) -> int:
        return int(max(self.serve.max_request_mb, self.serve.max_upload_mb) * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: Optional[dict] = None) -> "Settings":
        env = os.environ if environ is None else environ
        from pathlib import Path

        serve = ServeSection()
        if env.get("PNEUMO_CONFIG"):
            serve = ServeSection.model_validate(read_yaml(Path(env["PNEUMO_CONFIG"])).get("serve") or {})
        updates = {}
        if env.get("PNEUMO_BACKEND"):
            updates["backend"] = env["PNEUMO_BACKEND"]
        if env.get("PNEUMO_PRECISION"):
            updates["precision"] = env["PNEUMO_PRECISION"]
        if env.get("PNEUMO_MAX_UPLOAD_MB"):
            updates["max_upload_mb"] = float(env["PNEUMO_MAX_UPLOAD_MB"])
        if updates:
            serve = ServeSection.model_validate({**serve.model_dump(), **updates})
        keys = frozenset(k.strip() for k in env.get(serve.api_key_env, "").split(",") if k.strip())
        return cls(artifact=env.get("PNEUMO_ARTIFACT", DEFAULT_ARTIFACT), serve=serve, api_keys=keys)
