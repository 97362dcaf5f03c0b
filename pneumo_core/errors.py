"""Errors pneumo raises for problems the user can fix; the CLI prints them without a traceback."""


class PneumoError(Exception):
    """Base class: the message says what is wrong and what to do next.

    ``code`` (machine-readable) and ``http_status`` are how every adapter reports it: REST as
    ``{"error": code, "message": ...}`` with that status, RunPod as ``{"error": "code: message"}``.
    """

    code = "error"
    http_status = 400


class PluginError(PneumoError):
    """A plugin cannot be loaded, or two plugins claim one name, or a name is unknown."""


class ConfigError(PneumoError):
    """A config file is missing, unparsable, or fails validation (message names file and key)."""


class ArtifactError(PneumoError):
    """A model artifact is missing, truncated, corrupt or tampered with."""

    code = "artifact_error"
    http_status = 503


class ModelOutputError(PneumoError):
    """The model gave a non-finite output (NaN or infinity): an error, never a label."""

    code = "model_output_invalid"
    http_status = 500
