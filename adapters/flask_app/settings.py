"""Serving settings: from a config's ``serve`` section and environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from pneumo_core import BUNDLED_ARTIFACT as DEFAULT_ARTIFACT
from pneumo_core.config import read_yaml
from pneumo_core.config.schema import ServeSection
from pneumo_core.config.serving import serve_from_env


@dataclass
class Settings:
    """What the app needs. Environment: PNEUMO_ARTIFACT, PNEUMO_CONFIG (a config whose ``serve``
    section is the base), the serving variables of ``pneumo_core.config.serving`` (shared with
    the RunPod worker), and the API keys (comma-separated, in the variable ``serve.api_key_env``
    names, PNEUMO_API_KEYS by default; auth is on when it is set)."""

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
        serve = ServeSection()
        if env.get("PNEUMO_CONFIG"):
            serve = ServeSection.model_validate(read_yaml(Path(env["PNEUMO_CONFIG"])).get("serve") or {})
        serve = serve_from_env(env, serve)
        keys = frozenset(k.strip() for k in env.get(serve.api_key_env, "").split(",") if k.strip())
        return cls(artifact=env.get("PNEUMO_ARTIFACT", DEFAULT_ARTIFACT), serve=serve, api_keys=keys)
