"""What the wire format allows: caps, id and text rules, and the errors a violation raises.

The field checks here are what every message's validation is built from; each
raises :class:`MalformedMessage` with ``"field: reason"`` and the message adds its kind.
"""

from __future__ import annotations

import re
import typing

from edge_client.errors import ProtocolError

PROTOCOL_VERSION = 3
DEFAULT_PREFIX = "fedge"
CODECS = ("fp32", "fp16", "int8")
CODEC_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8"}
NUMPY_DTYPES = {"float32": "<f4", "float16": "<f2", "int8": "i1"}  # data is little-endian
MAX_CONTROL_BYTES = 128 * 1024  # manifest, round, presence, reply: one MQTT message each
MAX_CHUNK_BYTES = 8 * 1024 * 1024
MAX_TRANSFER_BYTES = 64 * 1024 * 1024  # a reassembled weights or update payload
MAX_CHUNKS = 65_536
MAX_TENSORS = 4096
MAX_NDIM = 8
MAX_ELEMENTS = MAX_TRANSFER_BYTES
MAX_SELECTED = 4096
MAX_METRICS = 64
MAX_TEXT = 256
MAX_ITEMS = 200_000  # CBOR data items per payload: bounds the Python objects a decode builds
MAX_DEPTH = 6  # message > tensors > tensor > shape is depth 4
RETAINED_KINDS = frozenset({"manifest", "model", "weights", "round", "presence", "status",
                            "stats"})
CLEAR = b""  # publishing an empty retained payload deletes the retained message

#: the one id rule (client ids, federations, key ids, transfer ids, prefix segments): no
#: '/', '+', '#' or '$', so no topic level or wildcard, and never '.', '..' or a leading '-'
ID_RULE = "1-64 characters of [A-Za-z0-9_.-] starting with a letter or digit"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NUMBER = re.compile(r"0|[1-9][0-9]{0,15}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # control characters, lone surrogates


class MalformedMessage(ProtocolError):
    """A payload is not a valid message; the text names the message kind and field."""


class MessageTooLarge(MalformedMessage):
    """A payload, or a size declared inside it, exceeds a cap."""


class UnsupportedVersion(MalformedMessage):
    """A message carries a protocol version this code does not speak."""


class InvalidTopic(ProtocolError):
    """A topic or an id used in a topic does not follow the topic tree."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 72 else text[:69] + "..."


def _fail(
    path: str, reason: str, error: type[MalformedMessage] = MalformedMessage
) -> typing.NoReturn:
    raise error(f"{path}: {reason}")


# ------------------------------------------------------------------ field checks


def _check(ok: bool, name: str, reason: str) -> None:
    if not ok:
        _fail(name, reason)


def _id_field(value: str, name: str) -> None:
    _check(bool(_ID.fullmatch(value)), name, f"{_short(value)} is not a safe id ({ID_RULE})")


def _sha_field(value: str, name: str) -> None:
    _check(bool(_SHA256.fullmatch(value)), name, f"{_short(value)} is not 64 lowercase hex digits")


def _range(value: float, name: str, low: float, high: float) -> None:
    _check(low <= value <= high, name, f"{_short(value)} not in [{low}, {high}]")


def _text(value: str, name: str, limit: int = MAX_TEXT) -> None:
    _check(len(value) <= limit and not _CONTROL.search(value), name,
           f"must be at most {limit} characters, no control characters or surrogates")


def _codec(value: str, name: str = "codec") -> None:
    _check(value in CODECS, name, f"{_short(value)} is not one of {CODECS}")
