"""The one exception tree of fedge.

Every error fedge raises on purpose derives from :class:`FedgeError`, and each
message says what was wrong and where (file, topic, field).
"""

from __future__ import annotations


class FedgeError(Exception):
    """Base class of every error fedge raises on purpose."""


class ProtocolError(FedgeError):
    """A message on the wire is malformed, truncated, oversized or inconsistent."""


class ValidationError(FedgeError):
    """A well-formed message or file carries content that must not be accepted."""


class ConfigError(FedgeError):
    """Configuration (flags, TOML, environment) is missing or invalid."""


class DataError(FedgeError):
    """A local data file cannot be read; the message names file, line and column."""


class ModelError(FedgeError):
    """A model file cannot be loaded, or does not fit the data or the weights."""
