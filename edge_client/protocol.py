"""The fedge wire format: every MQTT topic and every message payload.

Nothing else in the repository builds topic strings or payload bytes. Topics live
under ``{prefix}/v1/{federation}/...`` (see :class:`Topics`). Every message is a
frozen dataclass encoded as one canonical CBOR map that carries the protocol
version ``v`` and the message ``kind``; decoding is strict and raises only
:class:`~edge_client.errors.ProtocolError` subclasses whose text names the field.
Sizes are checked before anything is allocated: the payload against a cap, every
CBOR header against the bytes that remain, element counts against the data length.
The full specification is ``docs/protocol.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import cbor2
import numpy as np
import numpy.typing as npt

from edge_client.errors import ProtocolError

PROTOCOL_VERSION = 1
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
RETAINED_KINDS = frozenset({"manifest", "model", "weights", "round", "presence"})
CLEAR = b""  # publishing an empty retained payload deletes the retained message

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


# ---------------------------------------------------------------------------- topics


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe id: 1-64 of ``[A-Za-z0-9_.-]``, first alphanumeric.

    Raises:
        InvalidTopic: naming ``what`` and the offending value.
    """
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidTopic(
            f"{what} {_short(value)}: must be 1-64 characters of [A-Za-z0-9_.-] "
            "starting with a letter or digit (no '/', '+', '#')"
        )
    return value


def _check_number(value: int, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**16:
        raise InvalidTopic(f"{what} {_short(value)}: must be an integer in [0, 1e16)")
    return str(value)


def _check_sha(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise InvalidTopic(f"{what} {_short(value)}: must be 64 lowercase hex digits")
    return value


@dataclass(frozen=True)
class TopicRef:
    """What :func:`parse_topic` found: the kind of topic and the ids in it."""

    kind: str
    federation: str
    client_id: str | None = None
    sha256: str | None = None
    version: int | None = None
    index: int | None = None


_LAYOUT: dict[str, tuple[str, ...]] = {
    "manifest": (), "round": (), "model": ("sha256", "index"), "weights": ("version", "index"),
    "presence": ("client_id",), "update": ("client_id",), "reply": ("client_id",),
}


def _check_prefix(prefix: str) -> str:
    for segment in prefix.split("/"):
        check_id(segment, f"topic prefix segment of {prefix!r}")
    return prefix


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> TopicRef:
    """Parse a fedge topic strictly.

    Args:
        topic: a topic as received from the broker.
        prefix: the deployment's topic prefix.

    Returns:
        The topic's kind (one of ``manifest model weights round presence update reply``)
        and the ids it carries.

    Raises:
        InvalidTopic: the topic is not in the tree, or an id in it is not valid.
    """
    head = f"{_check_prefix(prefix)}/"
    if not isinstance(topic, str) or not topic.startswith(head) or len(topic) > 512:
        raise InvalidTopic(f"topic {_short(topic)}: not under {head!r}")
    parts = topic[len(head):].split("/")
    if len(parts) < 3:
        raise InvalidTopic(f"topic {_short(topic)}: too few segments")
    version, federation, kind, *rest = parts
    if version != f"v{PROTOCOL_VERSION}":
        raise InvalidTopic(f"topic {_short(topic)}: protocol segment {version!r} is not "
                           f"'v{PROTOCOL_VERSION}'")
    check_id(federation, "federation")
    fields = _LAYOUT.get(kind)
    if fields is None or len(rest) != len(fields):
        raise InvalidTopic(f"topic {_short(topic)}: unknown kind or wrong number of segments")
    found: dict[str, Any] = {}
    for name, segment in zip(fields, rest, strict=True):
        if name in ("version", "index"):
            if not _NUMBER.fullmatch(segment):
                raise InvalidTopic(f"topic {_short(topic)}: {name} {segment!r} is not a number")
            found[name] = int(segment)
        else:
            found[name] = (_check_sha if name == "sha256" else check_id)(segment, name)
    return TopicRef(kind=kind, federation=federation, **found)


@dataclass(frozen=True)
class Topics:
    """Builds every topic and subscription filter of one federation.

    Attributes:
        federation: the federation id (a safe id).
        prefix: deployment prefix, one or more safe ids joined by ``/``.
    """

    federation: str
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_id(self.federation, "federation")
        _check_prefix(self.prefix)

    @property
    def base(self) -> str:
        """``{prefix}/v1/{federation}``."""
        return f"{self.prefix}/v{PROTOCOL_VERSION}/{self.federation}"

    def manifest(self) -> str:
        """Retained manifest of the current global model."""
        return f"{self.base}/manifest"

    def round(self) -> str:
        """Retained announcement of the open round."""
        return f"{self.base}/round"

    def model_chunk(self, sha256: str, index: int) -> str:
        """Retained chunk ``index`` of the .tflite file with this SHA-256."""
        return f"{self.base}/model/{_check_sha(sha256, 'sha256')}/{_check_number(index, 'index')}"

    def weights_chunk(self, version: int, index: int) -> str:
        """Retained chunk ``index`` of global weights ``version``."""
        return (f"{self.base}/weights/{_check_number(version, 'version')}/"
                f"{_check_number(index, 'index')}")

    def presence(self, client_id: str) -> str:
        """Retained presence of a client (also its Last Will)."""
        return f"{self.base}/presence/{check_id(client_id, 'client_id')}"

    def update(self, client_id: str) -> str:
        """Where a client publishes the chunks of its update."""
        return f"{self.base}/update/{check_id(client_id, 'client_id')}"

    def reply(self, client_id: str) -> str:
        """Where the aggregator answers one client."""
        return f"{self.base}/reply/{check_id(client_id, 'client_id')}"

    def model_chunks(self, sha256: str, count: int) -> list[str]:
        """All chunk topics of one model file (e.g. to clear them)."""
        return [self.model_chunk(sha256, i) for i in range(count)]

    def weights_chunks(self, version: int, count: int) -> list[str]:
        """All chunk topics of one weights version (e.g. to clear them)."""
        return [self.weights_chunk(version, i) for i in range(count)]

    def model_filter(self, sha256: str) -> str:
        """Subscription filter for every chunk of one model file."""
        return f"{self.base}/model/{_check_sha(sha256, 'sha256')}/+"

    def weights_filter(self, version: int) -> str:
        """Subscription filter for every chunk of one weights version."""
        return f"{self.base}/weights/{_check_number(version, 'version')}/+"

    def presence_filter(self) -> str:
        """Subscription filter for every client's presence."""
        return f"{self.base}/presence/+"

    def update_filter(self, share_group: str | None = None) -> str:
        """Subscription filter for every client's update chunks.

        Args:
            share_group: if given, an MQTT 5 shared subscription ``$share/{group}/...``.
        """
        topic = f"{self.base}/update/+"
        return topic if share_group is None else f"$share/{check_id(share_group, 'group')}/{topic}"

    def everything(self) -> str:
        """Subscription filter for the whole federation."""
        return f"{self.base}/#"

    def parse(self, topic: str) -> TopicRef:
        """Like :func:`parse_topic`, and the topic must belong to this federation."""
        ref = parse_topic(topic, self.prefix)
        if ref.federation != self.federation:
            raise InvalidTopic(f"topic {_short(topic)}: federation is not {self.federation!r}")
        return ref


def is_clear(payload: bytes) -> bool:
    """True for the empty payload that deletes a retained message."""
    return len(payload) == 0


# ----------------------------------------------------------------------- CBOR codec


def _fail(
    path: str, reason: str, error: type[MalformedMessage] = MalformedMessage
) -> typing.NoReturn:
    raise error(f"{path}: {reason}")


def _head(data: bytes, pos: int, kind: str) -> tuple[int, int, int]:
    """Read the CBOR item header at ``pos``: (major type, argument, position after it)."""
    if pos >= len(data):
        _fail(kind, f"truncated at byte {pos}")
    major, info = data[pos] >> 5, data[pos] & 31
    if info >= 28 or (major == 7 and info not in (20, 21, 22, 25, 26, 27)):
        _fail(kind, f"unsupported CBOR item (major {major}, info {info}) at byte {pos}")
    if info < 24:
        return major, info, pos + 1
    end = pos + 1 + (1 << (info - 24))
    if end > len(data):
        _fail(kind, f"truncated at byte {pos + 1}")
    return major, int.from_bytes(data[pos + 1:end], "big"), end


def _scan(data: bytes, kind: str) -> None:
    """Walk every CBOR header without building anything; reject what we never send.

    Rejected: tags (bignums, shared references, regexes ...), indefinite lengths,
    simple values other than false/true/null, nesting deeper than MAX_DEPTH,
    more than MAX_ITEMS items, declared lengths beyond the remaining bytes.
    """
    pos, items, pending = 0, 0, [1]  # pending: items still to read at each open level
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        pending[-1] -= 1
        items += 1
        if items > MAX_ITEMS or len(pending) > MAX_DEPTH + 1:
            _fail(kind, "too many or too deeply nested CBOR items", MessageTooLarge)
        major, arg, pos = _head(data, pos, kind)
        left = len(data) - pos
        if major == 6:
            _fail(kind, f"CBOR tags are not allowed (tag {arg})")
        if major in (2, 3):
            if arg > left:
                _fail(kind, f"declared length {arg} exceeds the {left} bytes left")
            pos += arg
        elif major in (4, 5):
            count = arg * (2 if major == 5 else 1)
            if count > left:  # every item takes at least one byte
                _fail(kind, f"declared {count} items but only {left} bytes left")
            pending.append(count)
    if pos != len(data):
        _fail(kind, f"{len(data) - pos} trailing bytes after the message")


def _load(data: bytes, limit: int, kind: str) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(kind, f"payload must be bytes, not {type(data).__name__}")
    if len(data) > limit:
        _fail(kind, f"{len(data)} bytes exceeds the cap of {limit}", MessageTooLarge)
    if len(data) == 0:
        _fail(kind, "empty payload (a cleared retained topic?)")
    data = bytes(data)
    _scan(data, kind)
    try:
        return cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False,
                           strict_hashable_types=True, max_depth=MAX_DEPTH + 2)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as error:
        _fail(kind, f"invalid CBOR: {_short(str(error))}")


def _to_wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_wire(item) for item in value]
    if isinstance(value, dict):
        return {key: _to_wire(item) for key, item in value.items()}
    return value


@functools.cache
def _schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_wire(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _from_wire(inner, value, path)
    if origin is tuple:
        items = _expect(value, list, path)
        return tuple(_from_wire(args[0], item, f"{path}[{i}]") for i, item in enumerate(items))
    if origin is dict:
        mapping = _expect(value, dict, path)
        return {_expect(k, str, f"{path} key"): _from_wire(args[1], v, f"{path}[{_short(k)}]")
                for k, v in mapping.items()}
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, path)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if tp is int and isinstance(value, bool):
        _fail(path, "expected int, got bool")
    return _expect(value, tp, path)


def _expect(value: Any, tp: type, path: str) -> Any:
    if not isinstance(value, tp):
        _fail(path, f"expected {tp.__name__}, got {type(value).__name__}")
    return value


def _build(cls: type, value: Any, path: str) -> Any:
    body = _expect(value, dict, path)
    schema = _schema(cls)
    missing, extra = schema.keys() - body.keys(), body.keys() - schema.keys()
    if missing:
        _fail(path, f"missing field(s) {sorted(missing)}")
    if extra:
        _fail(path, f"unknown field(s) {_short(sorted(map(str, extra)))}")
    kwargs = {name: _from_wire(tp, body[name], f"{path}.{name}") for name, tp in schema.items()}
    try:
        return cls(**kwargs)
    except MalformedMessage as error:
        if issubclass(cls, Message):
            raise
        raise type(error)(f"{path}.{error}") from None


# ------------------------------------------------------------------ field checks


def _check(ok: bool, name: str, reason: str) -> None:
    if not ok:
        _fail(name, reason)


def _id_field(value: str, name: str) -> None:
    _check(bool(_ID.fullmatch(value)), name, f"{_short(value)} is not a safe id "
           "(1-64 of [A-Za-z0-9_.-], starting with a letter or digit)")


def _sha_field(value: str, name: str) -> None:
    _check(bool(_SHA256.fullmatch(value)), name, f"{_short(value)} is not 64 lowercase hex digits")


def _range(value: float, name: str, low: float, high: float) -> None:
    _check(low <= value <= high, name, f"{_short(value)} not in [{low}, {high}]")


def _text(value: str, name: str, limit: int = MAX_TEXT) -> None:
    _check(len(value) <= limit and not _CONTROL.search(value), name,
           f"must be at most {limit} characters, no control characters or surrogates")


def _codec(value: str, name: str = "codec") -> None:
    _check(value in CODECS, name, f"{_short(value)} is not one of {CODECS}")


def _unique_tensors(tensors: tuple[Tensor, ...]) -> None:
    _check(len(tensors) <= MAX_TENSORS, "tensors", f"more than {MAX_TENSORS} tensors")
    _check(len({t.name for t in tensors}) == len(tensors), "tensors", "duplicate tensor names")


# --------------------------------------------------------------------- messages

M = TypeVar("M", bound="Message")


class Message:
    """Base of every top-level message: strict canonical-CBOR encode and decode."""

    KIND: ClassVar[str]
    MAX_BYTES: ClassVar[int] = MAX_CONTROL_BYTES

    def __post_init__(self) -> None:
        try:
            self._check()
        except MalformedMessage as error:
            raise type(error)(f"{self.KIND}.{error}") from None

    def _check(self) -> None:
        """Raise MalformedMessage("field: reason") for a value the protocol forbids."""

    def encode(self) -> bytes:
        """Canonical CBOR bytes of this message (deterministic: golden files pin them)."""
        body = _to_wire(self)
        body.update(v=PROTOCOL_VERSION, kind=self.KIND)
        return bytes(cbor2.dumps(body, canonical=True))

    @classmethod
    def decode(cls: type[M], data: bytes, *, max_bytes: int | None = None) -> M:
        """Decode and validate a payload.

        Args:
            data: the payload bytes, untrusted.
            max_bytes: cap on ``len(data)``; defaults to the message's ``MAX_BYTES``.

        Raises:
            MessageTooLarge: over a cap. UnsupportedVersion: unknown ``v``.
            MalformedMessage: anything else wrong, naming the field.
        """
        body = _load(data, cls.MAX_BYTES if max_bytes is None else max_bytes, cls.KIND)
        if not isinstance(body, dict):
            _fail(cls.KIND, f"expected a CBOR map, got {type(body).__name__}")
        version = body.pop("v", None)
        if type(version) is not int or version != PROTOCOL_VERSION:
            _fail(f"{cls.KIND}.v", f"protocol version {_short(version)} is not supported "
                  f"(this code speaks {PROTOCOL_VERSION})", UnsupportedVersion)
        kind = body.pop("kind", None)
        if kind != cls.KIND:
            _fail(f"{cls.KIND}.kind", f"got {_short(kind)}")
        built: M = _build(cls, body, cls.KIND)
        return built


@dataclass(frozen=True)
class Tensor:
    """A self-describing tensor on the wire.

    Attributes:
        name: tensor name, as in the model's weights.
        codec: ``fp32``, ``fp16`` or ``int8``.
        dtype: element type of ``data``: ``float32``, ``float16`` or ``int8``, fixed by codec.
        shape: dimensions; ``()`` is a scalar, a zero dimension an empty tensor.
        scales: int8 only: little-endian float32 scales, one per output channel
            (last axis) for >=2-D tensors, one for 0-D/1-D; empty for other codecs.
        data: elements, little-endian, C order.
    """

    name: str
    codec: str
    dtype: str
    shape: tuple[int, ...]
    scales: bytes
    data: bytes

    def __post_init__(self) -> None:
        _text(self.name, "name")
        _check(len(self.name) > 0, "name", "must not be empty")
        _codec(self.codec)
        _check(self.dtype == CODEC_DTYPES[self.codec], "dtype",
               f"{_short(self.dtype)} does not match codec {self.codec}")
        self._check_sizes()
        self._check_values()

    @property
    def channels(self) -> int:
        """Number of int8 scales this tensor needs."""
        return self.shape[-1] if len(self.shape) >= 2 else 1

    def values(self) -> npt.NDArray[Any]:
        """The raw elements as a read-only array of ``dtype`` (no copy)."""
        return np.frombuffer(self.data, dtype=NUMPY_DTYPES[self.dtype]).reshape(self.shape)

    def scale_values(self) -> npt.NDArray[np.float32]:
        """The int8 scales as a read-only float32 array (empty for other codecs)."""
        return np.frombuffer(self.scales, dtype="<f4")

    def _check_sizes(self) -> None:
        _check(len(self.shape) <= MAX_NDIM, "shape", f"more than {MAX_NDIM} dimensions")
        _check(all(0 <= d <= MAX_ELEMENTS for d in self.shape), "shape",
               f"dimensions must be in [0, {MAX_ELEMENTS}]")
        count = math.prod(self.shape)
        _check(count <= MAX_ELEMENTS, "shape", f"{count} elements exceeds {MAX_ELEMENTS}")
        expected = count * np.dtype(NUMPY_DTYPES[self.dtype]).itemsize
        _check(len(self.data) == expected, "data", f"{len(self.data)} bytes, expected {expected} "
               f"for shape {self.shape} {self.dtype} (tensor {_short(self.name)})")
        want = 4 * self.channels if self.codec == "int8" else 0
        _check(len(self.scales) == want, "scales", f"{len(self.scales)} bytes, expected {want}")

    def _check_values(self) -> None:
        scales = self.scale_values()
        _check(bool(np.all(np.isfinite(scales) & (scales >= 0))), "scales",
               "must be finite and >= 0")
        values = self.values()
        if self.codec == "int8":
            _check(not np.any(values == -128), "data", "int8 value -128 is outside [-127, 127]")
        else:
            _check(bool(np.all(np.isfinite(values))), "data",
                   f"non-finite values (tensor {_short(self.name)})")


@dataclass(frozen=True)
class Hyperparameters:
    """Local training settings of a round."""

    epochs: int
    batch_size: int
    learning_rate: float
    mu: float = 0.0  # FedProx proximal weight; 0 is plain FedAvg

    def __post_init__(self) -> None:
        _range(self.epochs, "epochs", 1, 10_000)
        _range(self.batch_size, "batch_size", 1, 1_000_000)
        _range(self.learning_rate, "learning_rate", 1e-12, 1e3)
        _range(self.mu, "mu", 0.0, 1e6)


@dataclass(frozen=True)
class Manifest(Message):
    """Retained description of the current global model; signed by the aggregator.

    Attributes:
        weights_sha256: SHA-256 of the encoded :class:`Weights` payload, so a signature
            over the manifest also covers the weights.
        codec: codec of the published global weights.
        signature: over :meth:`signed_bytes`; ``None`` when unsigned.
    """

    KIND: ClassVar[str] = "manifest"
    federation: str
    model_sha256: str
    model_size: int
    weights_version: int
    weights_sha256: str
    round_id: int
    codec: str
    key_id: str
    signature: bytes | None = None

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _sha_field(self.model_sha256, "model_sha256")
        _range(self.model_size, "model_size", 1, MAX_TRANSFER_BYTES)
        _range(self.weights_version, "weights_version", 0, 2**53)
        _sha_field(self.weights_sha256, "weights_sha256")
        _range(self.round_id, "round_id", 0, 2**53)
        _codec(self.codec)
        _id_field(self.key_id, "key_id")
        _check(self.signature is None or 0 < len(self.signature) <= 1024, "signature",
               "must be 1-1024 bytes or null")

    def signed_bytes(self) -> bytes:
        """The canonical bytes a signature covers: the encoding with ``signature=None``."""
        return dataclasses.replace(self, signature=None).encode()


@dataclass(frozen=True)
class Weights(Message):
    """Global weights ``version``: the payload chunked under ``weights/{version}/``."""

    KIND: ClassVar[str] = "weights"
    MAX_BYTES: ClassVar[int] = MAX_TRANSFER_BYTES
    federation: str
    version: int
    tensors: tuple[Tensor, ...]

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _range(self.version, "version", 0, 2**53)
        _unique_tensors(self.tensors)


@dataclass(frozen=True)
class Round(Message):
    """Retained announcement of the open round.

    Exactly one of ``selected`` (explicit client ids) and ``fraction`` (clients select
    themselves with :meth:`selects`) is set.
    """

    KIND: ClassVar[str] = "round"
    federation: str
    round_id: int
    weights_version: int
    model_sha256: str
    deadline: float
    hyperparameters: Hyperparameters
    codec: str
    selected: tuple[str, ...] | None = None
    fraction: float | None = None

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _range(self.round_id, "round_id", 0, 2**53)
        _range(self.weights_version, "weights_version", 0, 2**53)
        _sha_field(self.model_sha256, "model_sha256")
        _range(self.deadline, "deadline", 0.0, 1e11)
        _codec(self.codec)
        _check((self.selected is None) != (self.fraction is None), "selected",
               "exactly one of selected and fraction must be set")
        if self.selected is not None:
            _check(len(self.selected) <= MAX_SELECTED, "selected", f"over {MAX_SELECTED} ids")
            for client_id in self.selected:
                _id_field(client_id, "selected")
        if self.fraction is not None:
            _range(self.fraction, "fraction", 1e-9, 1.0)

    def selects(self, client_id: str) -> bool:
        """Whether ``client_id`` takes part: listed, or its hash falls under ``fraction``."""
        if self.selected is not None:
            return client_id in self.selected
        key = f"{self.federation}/{self.round_id}/{client_id}".encode()
        draw = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64
        return draw < typing.cast(float, self.fraction)


@dataclass(frozen=True)
class Presence(Message):
    """Retained presence of a client; with ``online=False`` it is also the Last Will."""

    KIND: ClassVar[str] = "presence"
    client_id: str
    online: bool
    samples: int
    runtime: str
    runtime_version: str
    software_version: str
    timestamp: float
    battery: float | None = None  # 0..1 where known
    charging: bool | None = None

    def _check(self) -> None:
        _id_field(self.client_id, "client_id")
        _range(self.samples, "samples", 0, 2**53)
        for name in ("runtime", "runtime_version", "software_version"):
            _text(getattr(self, name), name, 64)
        _range(self.timestamp, "timestamp", 0.0, 1e11)
        _check(self.battery is None or 0.0 <= self.battery <= 1.0, "battery", "not in [0, 1]")


@dataclass(frozen=True)
class Update(Message):
    """A client's model update: a delta from global weights ``base_version``."""

    KIND: ClassVar[str] = "update"
    MAX_BYTES: ClassVar[int] = MAX_TRANSFER_BYTES
    federation: str
    round_id: int
    client_id: str
    base_version: int
    model_sha256: str
    nonce: bytes
    num_samples: int
    metrics: dict[str, float]
    codec: str
    tensors: tuple[Tensor, ...]

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _range(self.round_id, "round_id", 0, 2**53)
        _id_field(self.client_id, "client_id")
        _range(self.base_version, "base_version", 0, 2**53)
        _sha_field(self.model_sha256, "model_sha256")
        _check(8 <= len(self.nonce) <= 64, "nonce", "must be 8-64 bytes")
        _range(self.num_samples, "num_samples", 1, 2**53)
        _check(len(self.metrics) <= MAX_METRICS, "metrics", f"more than {MAX_METRICS} entries")
        for key, value in self.metrics.items():
            _text(key, "metrics", 64)
            _check(math.isfinite(value), f"metrics[{_short(key)}]", "must be finite")
        _codec(self.codec)
        _unique_tensors(self.tensors)
        for tensor in self.tensors:
            _check(tensor.codec == self.codec, "tensors",
                   f"tensor {_short(tensor.name)} codec {tensor.codec} != update codec")


@dataclass(frozen=True)
class Reply(Message):
    """The aggregator's answer to one update."""

    KIND: ClassVar[str] = "reply"
    federation: str
    round_id: int
    client_id: str
    nonce: bytes
    accepted: bool
    reason: str = ""

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _range(self.round_id, "round_id", 0, 2**53)
        _id_field(self.client_id, "client_id")
        _check(8 <= len(self.nonce) <= 64, "nonce", "must be 8-64 bytes")
        _text(self.reason, "reason")


@dataclass(frozen=True)
class Chunk(Message):
    """One MQTT payload of a chunked transfer (see ``edge_client.transfer``).

    Attributes:
        transfer_id: names the transfer within its sender.
        index: position, ``0 <= index < count``.
        count: number of chunks.
        total_size: bytes of the whole payload.
        sha256: SHA-256 (hex) of the whole payload.
        data: this chunk's slice.
    """

    KIND: ClassVar[str] = "chunk"
    MAX_BYTES: ClassVar[int] = MAX_CHUNK_BYTES
    transfer_id: str
    index: int
    count: int
    total_size: int
    sha256: str
    data: bytes

    def _check(self) -> None:
        _id_field(self.transfer_id, "transfer_id")
        _range(self.count, "count", 1, MAX_CHUNKS)
        _range(self.index, "index", 0, self.count - 1)
        _range(self.total_size, "total_size", 0, 2**40)
        _sha_field(self.sha256, "sha256")
        _check(len(self.data) <= self.total_size, "data", "longer than total_size")


@dataclass(frozen=True)
class TensorSet(Message):
    """Named tensors with no further meaning, e.g. a client's persisted residual."""

    KIND: ClassVar[str] = "tensors"
    MAX_BYTES: ClassVar[int] = MAX_TRANSFER_BYTES
    tensors: tuple[Tensor, ...]

    def _check(self) -> None:
        _unique_tensors(self.tensors)


MESSAGES: tuple[type[Message], ...] = (
    Manifest, Weights, Round, Presence, Update, Reply, Chunk, TensorSet)
