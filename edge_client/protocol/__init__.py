"""The fedge wire format: every MQTT topic and every message payload.

Nothing else in the repository builds topic strings or payload bytes. Topics live
under ``{prefix}/v3/{federation}/...`` (see :class:`Topics`). Every message is a
frozen dataclass encoded as one canonical CBOR map that carries the protocol
version ``v`` and the message ``kind``; decoding is strict and raises only
:class:`~edge_client.errors.ProtocolError` subclasses whose text names the field.
Sizes are checked before anything is allocated: the payload against a cap, every
CBOR header against the bytes that remain, element counts against the data length.
The full specification is ``docs/protocol.md``.

Import everything from here (``from edge_client.protocol import Update``); the
modules behind it are:

- ``limits``: protocol version, codecs, caps, the id rule, the errors and field checks;
- ``ids``: the id rule's check (:func:`check_id`, :func:`is_id`) and the transfer ids of
  updates (:func:`update_transfer_id`, :func:`parse_update_transfer_id`);
- ``topics``: :class:`Topics`, :class:`TopicRef`, :func:`parse_topic`;
- ``cbor``: strict CBOR scanning and loading, dataclasses to and from CBOR maps;
- ``tensor``: :class:`Tensor`, the self-describing tensor;
- ``messages``: :class:`Message` and every message kind, :data:`MESSAGES`.
"""

from __future__ import annotations

from edge_client.errors import ProtocolError
from edge_client.protocol.ids import (
    check_id,
    is_id,
    parse_update_transfer_id,
    update_transfer_id,
    weights_transfer_id,
)
from edge_client.protocol.limits import (
    CLEAR,
    CODEC_DTYPES,
    CODECS,
    DEFAULT_PREFIX,
    ID_RULE,
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_CONTROL_BYTES,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_ITEMS,
    MAX_METRICS,
    MAX_NDIM,
    MAX_SELECTED,
    MAX_TENSORS,
    MAX_TEXT,
    MAX_TRANSFER_BYTES,
    NUMPY_DTYPES,
    PROTOCOL_VERSION,
    RETAINED_KINDS,
    InvalidTopic,
    MalformedMessage,
    MessageTooLarge,
    UnsupportedVersion,
)
from edge_client.protocol.messages import (
    FINISH_REASONS,
    MESSAGES,
    PRIVACY_BUDGET,
    REASON_BUSY,
    Chunk,
    FeatureSummary,
    Hyperparameters,
    M,
    Manifest,
    Message,
    Presence,
    Reply,
    Round,
    SignedMessage,
    StatsReport,
    Status,
    TensorSet,
    Update,
    Weights,
)
from edge_client.protocol.tensor import Tensor, TensorSpec
from edge_client.protocol.topics import TopicRef, Topics, is_clear, parse_topic

__all__ = [
    "CLEAR",
    "CODECS",
    "CODEC_DTYPES",
    "DEFAULT_PREFIX",
    "FINISH_REASONS",
    "ID_RULE",
    "MAX_CHUNKS",
    "MAX_CHUNK_BYTES",
    "MAX_CONTROL_BYTES",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_ITEMS",
    "MAX_METRICS",
    "MAX_NDIM",
    "MAX_SELECTED",
    "MAX_TENSORS",
    "MAX_TEXT",
    "MAX_TRANSFER_BYTES",
    "MESSAGES",
    "NUMPY_DTYPES",
    "PRIVACY_BUDGET",
    "PROTOCOL_VERSION",
    "REASON_BUSY",
    "RETAINED_KINDS",
    "Chunk",
    "FeatureSummary",
    "Hyperparameters",
    "InvalidTopic",
    "M",
    "MalformedMessage",
    "Manifest",
    "Message",
    "MessageTooLarge",
    "Presence",
    "ProtocolError",
    "Reply",
    "Round",
    "SignedMessage",
    "StatsReport",
    "Status",
    "Tensor",
    "TensorSet",
    "TensorSpec",
    "TopicRef",
    "Topics",
    "UnsupportedVersion",
    "Update",
    "Weights",
    "check_id",
    "is_clear",
    "is_id",
    "parse_topic",
    "parse_update_transfer_id",
    "update_transfer_id",
    "weights_transfer_id",
]
