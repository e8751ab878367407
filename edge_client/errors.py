"""The roots of fedge's one exception tree.

Every error that ``edge_client`` and ``aggregator`` raise about what they were given
(a message, a file, a flag) derives from :class:`FedgeError`, and its message says what
was wrong and where (file, line, topic, field, flag); a broken invariant of the code
itself stays a plain ``ValueError`` or ``TypeError``. The subclasses live next to the
code that raises them (``MalformedMessage`` and ``InvalidTopic`` in the protocol,
``ChunkRejected`` in ``transfer``, ``SignatureRejected`` in ``signing``, ``TransportError``
in ``transport``); tools add their own (``FederationError``). ``models`` imports nothing
from the rest of fedge, so its errors (``ExportError``, ``ArchitectureError``) are not
part of this tree.
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
