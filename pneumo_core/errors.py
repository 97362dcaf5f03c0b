"""Errors pneumo raises for problems the user can fix; the CLI prints them without a traceback."""


class PneumoError(Exception):
    """Base class: the message says what is wrong and what to do next."""


class PluginError(PneumoError):
    """A plugin cannot be loaded, or two plugins claim one name, or a name is unknown."""


class ConfigError(PneumoError):
    """A config file is missing, unparsable, or fails validation (message names file and key)."""


class ArtifactError(PneumoError):
    """A model artifact is missing, truncated, corrupt or tampered with."""
