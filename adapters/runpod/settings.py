"""Worker settings, read once from environment variables (set them in the RunPod template)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from adapters.runpod.fetch import FetchPolicy
from pneumo_core import BUNDLED_ARTIFACT as DEFAULT_ARTIFACT
from pneumo_core.config.schema import ServeSection
from pneumo_core.config.serving import image_limits, serve_from_env
from pneumo_core.imaging import ImageLimits

REPO_ROOT = Path(__file__).resolve().parents[2]
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class RunpodSettings:
    """Environment variables (defaults in brackets):

    PNEUMO_ARTIFACT [models/pneumo-resnet18-kermany]  model artifact folder; a relative path is
        looked up in the working directory, then in the repository root
    the serving variables shared with the REST API (``pneumo_core.config.serving``):
        PNEUMO_BACKEND [torch], PNEUMO_PRECISION [auto], PNEUMO_MAX_IMAGE_MB [20] (base64-decoded
        or downloaded), PNEUMO_MAX_PIXELS [40000000], PNEUMO_MAX_IMAGES [16] (in one job)
    PNEUMO_RUNPOD_CONCURRENCY [4]  jobs one worker runs at once (they share micro-batches)
    PNEUMO_ALLOW_PRIVATE_URLS [0]  1 lets ``image_url`` reach loopback/private/link-local hosts
    PNEUMO_FETCH_TIMEOUT_S [10]  connect and per-read timeout for ``image_url``
    PNEUMO_FETCH_DEADLINE_S [30]  total time for one ``image_url`` download, redirects included
    PNEUMO_FETCH_MAX_REDIRECTS [3]  redirects followed (each target is checked again)
    """

    artifact: Path = REPO_ROOT / DEFAULT_ARTIFACT
    serve: ServeSection = field(default_factory=ServeSection)
    concurrency: int = 4
    allow_private_urls: bool = False
    fetch_timeout_s: float = 10.0
    fetch_deadline_s: float = 30.0
    max_redirects: int = 3

    @property
    def limits(self) -> ImageLimits:
        return image_limits(self.serve)

    @property
    def max_image_bytes(self) -> int:
        return self.limits.max_bytes

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(max_bytes=self.max_image_bytes, allow_private=self.allow_private_urls,
                           connect_timeout_s=min(self.fetch_timeout_s, self.fetch_deadline_s),
                           read_timeout_s=self.fetch_timeout_s, deadline_s=self.fetch_deadline_s,
                           max_redirects=self.max_redirects)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "RunpodSettings":
        """Read the variables above; raises ValueError (ConfigError for the shared serving
        variables) naming the variable on a bad value."""
        env = os.environ if environ is None else environ
        return cls(
            artifact=resolve_artifact(env.get("PNEUMO_ARTIFACT", "").strip() or DEFAULT_ARTIFACT),
            serve=serve_from_env(env),
            concurrency=_number(env, "PNEUMO_RUNPOD_CONCURRENCY", 4, int),
            allow_private_urls=_flag(env, "PNEUMO_ALLOW_PRIVATE_URLS"),
            fetch_timeout_s=_number(env, "PNEUMO_FETCH_TIMEOUT_S", 10.0, float),
            fetch_deadline_s=_number(env, "PNEUMO_FETCH_DEADLINE_S", 30.0, float),
            max_redirects=_number(env, "PNEUMO_FETCH_MAX_REDIRECTS", 3, int, minimum=0),
        )


def resolve_artifact(value: str) -> Path:
    """An absolute path as is; a relative one from the working directory if it exists there,
    else from the repository root (so the default works from any directory in a checkout)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return REPO_ROOT / path


def _number(env: Mapping[str, str], key: str, default, kind, minimum=None):
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    ok = value is not None and (value >= minimum if minimum is not None else value > 0)
    if not ok:
        bound = f">= {minimum}" if minimum is not None else "> 0"
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{key} must be {what} {bound}, not {raw!r}")
    return value


def _flag(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{key} must be 1 or 0 (true/false), not {raw!r}")
