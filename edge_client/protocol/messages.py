"""The messages: a frozen dataclass per kind, each one canonical CBOR map on the wire.

:class:`Message` gives every kind ``encode()`` (canonical CBOR carrying ``v`` and
``kind``) and a strict ``decode()``; each kind's ``_check`` enforces what the
protocol allows, naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import cbor2

from edge_client.protocol.cbor import _build, _load, _to_wire
from edge_client.protocol.limits import (
    MAX_CHUNK_BYTES,
    MAX_CHUNKS,
    MAX_CONTROL_BYTES,
    MAX_METRICS,
    MAX_SELECTED,
    MAX_TRANSFER_BYTES,
    PROTOCOL_VERSION,
    MalformedMessage,
    UnsupportedVersion,
    _check,
    _codec,
    _fail,
    _id_field,
    _range,
    _sha_field,
    _short,
    _text,
)
from edge_client.protocol.tensor import Tensor, _unique_tensors

M = TypeVar("M", bound="Message")
#: why a run ended, as a finished manifest says (docs/protocol.md, "Runs")
PRIVACY_BUDGET = "privacy budget"  # the next round would take epsilon above the target
FINISH_REASONS = ("", "rounds", PRIVACY_BUDGET)
PHASES = ("waiting", "collecting", "finished")
MAX_RUN_ID = 32
MAX_EVALUATION_BYTES = 128 * 1024  # a site's evaluation counts (edge_client.score_counts)


def _run_id(value: str) -> None:
    """A run id is empty (a sender outside any run, e.g. a test script) or a safe id of at
    most 32 characters; the aggregator makes 16 hex digits per new state directory."""
    if value:
        _id_field(value, "run_id")
        _check(len(value) <= MAX_RUN_ID, "run_id", f"longer than {MAX_RUN_ID} characters")


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
        built: M = _build(cls, body, cls.KIND, nested=False)
        return built


class SignedMessage(Message):
    """A message the aggregator signs and a verifying device acts on only when a trusted key
    signed it: the manifest, the round announcement and the reply (see
    ``edge_client.signing``). Each has ``key_id`` and ``signature`` fields."""

    key_id: str
    signature: bytes | None

    def signed_bytes(self) -> bytes:
        """The canonical bytes a signature covers: the encoding with ``signature=None``."""
        return dataclasses.replace(self, signature=None).encode()  # type: ignore[type-var]


def _signature_fields(key_id: str, signature: bytes | None, *, required: bool) -> None:
    if key_id or required:
        _id_field(key_id, "key_id")
    _check(signature is None or 0 < len(signature) <= 1024, "signature",
           "must be 1-1024 bytes or null")


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
class Manifest(SignedMessage):
    """Retained description of the current global model; signed by the aggregator.

    Attributes:
        weights_sha256: SHA-256 of the encoded :class:`Weights` payload, so a signature
            over the manifest also covers the weights.
        codec: codec of the published global weights.
        signature: over :meth:`signed_bytes`; ``None`` when unsigned.
        run_id: the run of the federation these weights belong to (see :func:`_run_id`).
        finished: why the run is over (``"rounds"``: its last round closed; ``"privacy
            budget"``: another round would exceed the DP budget), or ``""``
            while it runs. A device that sees it takes these weights as the final model.
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
    run_id: str = ""
    finished: str = ""

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _run_id(self.run_id)
        _check(self.finished in FINISH_REASONS, "finished",
               f"{_short(self.finished)} is not one of {FINISH_REASONS}")
        _sha_field(self.model_sha256, "model_sha256")
        _range(self.model_size, "model_size", 1, MAX_TRANSFER_BYTES)
        _range(self.weights_version, "weights_version", 0, 2**53)
        _sha_field(self.weights_sha256, "weights_sha256")
        _range(self.round_id, "round_id", 0, 2**53)
        _codec(self.codec)
        _signature_fields(self.key_id, self.signature, required=True)


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
class Round(SignedMessage):
    """Retained announcement of the open round; signed like the manifest (``key_id`` is
    empty and ``signature`` null when the aggregator has no signing key).

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
    run_id: str = ""
    key_id: str = ""
    signature: bytes | None = None

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _run_id(self.run_id)
        _signature_fields(self.key_id, self.signature, required=False)
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
    run_id: str = ""
    evaluation: bytes = b""  # canonical CBOR of the base model's evaluation counts, or empty

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _run_id(self.run_id)
        _check(len(self.evaluation) <= MAX_EVALUATION_BYTES, "evaluation",
               f"over {MAX_EVALUATION_BYTES} bytes")
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


#: the code of a temporary refusal (``"busy: …"``): the aggregator had no room for the
#: transfer just now; the client keeps its update and re-sends it within the round
REASON_BUSY = "busy"


@dataclass(frozen=True)
class Reply(SignedMessage):
    """The aggregator's answer to one update; signed like the manifest when the aggregator
    has a signing key."""

    KIND: ClassVar[str] = "reply"
    federation: str
    round_id: int
    client_id: str
    nonce: bytes
    accepted: bool
    reason: str = ""
    run_id: str = ""
    key_id: str = ""
    signature: bytes | None = None

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _run_id(self.run_id)
        _signature_fields(self.key_id, self.signature, required=False)
        _range(self.round_id, "round_id", 0, 2**53)
        _id_field(self.client_id, "client_id")
        _check(8 <= len(self.nonce) <= 64, "nonce", "must be 8-64 bytes")
        _text(self.reason, "reason")

    @property
    def temporary(self) -> bool:
        """Whether this is a refusal to try again (reason code :data:`REASON_BUSY`)."""
        return not self.accepted and self.reason.partition(":")[0] == REASON_BUSY


@dataclass(frozen=True)
class Status(Message):
    """Retained summary the aggregator keeps current, for ``fedge status`` and monitors.

    Attributes:
        phase: ``waiting`` (for clients), ``collecting`` or ``finished``.
        deadline: of the open round (unix seconds); 0 when none is open.
        selected, accepted: clients selected for, and accepted in, the open round.
        rejected: the open round's rejections by reason code.
        online: clients whose presence says online.
        last_round: numbers of the latest closed round's history line (``round``,
            ``version``, ``participants``, ``samples`` and the mean client metrics).
        updated_at: when this was published (unix seconds).
        finished: why the run is over, or ``""``.
    """

    KIND: ClassVar[str] = "status"
    federation: str
    run_id: str
    round_id: int
    phase: str
    weights_version: int
    deadline: float
    selected: int
    accepted: int
    rejected: dict[str, int]
    online: int
    last_round: dict[str, float]
    updated_at: float
    finished: str = ""

    def _check(self) -> None:
        _id_field(self.federation, "federation")
        _run_id(self.run_id)
        _range(self.round_id, "round_id", 0, 2**53)
        _check(self.phase in PHASES, "phase", f"{_short(self.phase)} is not one of {PHASES}")
        _range(self.weights_version, "weights_version", 0, 2**53)
        _range(self.deadline, "deadline", 0.0, 1e11)
        for name in ("selected", "accepted", "online"):
            _range(getattr(self, name), name, 0, 2**53)
        for name, mapping in (("rejected", self.rejected), ("last_round", self.last_round)):
            _check(len(mapping) <= MAX_METRICS, name, f"more than {MAX_METRICS} entries")
            for key, value in mapping.items():
                _text(key, name, 64)
                _check(math.isfinite(value) and value >= 0 if name == "rejected"
                       else math.isfinite(value), f"{name}[{_short(key)}]", "out of range")
        _range(self.updated_at, "updated_at", 0.0, 1e11)
        _check(self.finished in FINISH_REASONS, "finished",
               f"{_short(self.finished)} is not one of {FINISH_REASONS}")


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


MAX_STAT_FEATURES = 1_000  # columns one statistics report may carry
MAX_STAT_BINS = 1_002  # bins of one column: a categorical's categories (<= 1,000) + unseen


@dataclass(frozen=True)
class FeatureSummary:
    """One column's statistics at one site (``edge_client.feature_stats``); never a row.

    Attributes:
        name: the schema column.
        numeric: a numeric column (else categorical, or the label's classes).
        count, missing: values and missing cells.
        total, total_sq: sum and sum of squares of the values (numeric; else 0).
        low, high: smallest and largest value (numeric; else 0).
        bins: numeric: counts below the schema's range, in its fixed bins, above it;
            categorical: the count of each category in schema order, then of unseen ones.
    """

    name: str
    numeric: bool
    count: int
    missing: int
    total: float
    total_sq: float
    low: float
    high: float
    bins: tuple[int, ...]

    def __post_init__(self) -> None:
        _text(self.name, "name")
        _range(self.count, "count", 0, 2**53)
        _range(self.missing, "missing", 0, 2**53)
        for name in ("total", "total_sq", "low", "high"):
            _check(math.isfinite(getattr(self, name)), name, "not a finite number")
        _check(self.total_sq >= 0 and self.low <= self.high, "total_sq", "inconsistent")
        _check(len(self.bins) <= MAX_STAT_BINS, "bins", f"more than {MAX_STAT_BINS} bins")
        _check(all(type(b) is int and 0 <= b <= self.count for b in self.bins), "bins",
               "counts must be integers in [0, count]")


@dataclass(frozen=True)
class StatsReport(Message):
    """A device's retained statistics of its local table, for ``fedge stats``.

    Attributes:
        client_id: the reporting device.
        schema_sha256: the schema layout the statistics follow (``layout_sha256``): only
            reports of the same layout are added.
        rows: data rows of the table.
        min_count: the device's small-cell threshold: no column with fewer values is
            reported, and a published bin below it is suppressed.
        features: the columns reported, in schema order (then the label's classes).
        suppressed: the columns left out for having fewer than ``min_count`` values.
        timestamp: when the statistics were computed (unix seconds).
    """

    KIND: ClassVar[str] = "stats"
    client_id: str
    schema_sha256: str
    rows: int
    min_count: int
    features: tuple[FeatureSummary, ...]
    suppressed: tuple[str, ...]
    timestamp: float

    def _check(self) -> None:
        _id_field(self.client_id, "client_id")
        _sha_field(self.schema_sha256, "schema_sha256")
        _range(self.rows, "rows", 0, 2**53)
        _range(self.min_count, "min_count", 1, 2**31)
        _check(len(self.features) + len(self.suppressed) <= MAX_STAT_FEATURES, "features",
               f"more than {MAX_STAT_FEATURES} columns")
        names = [f.name for f in self.features] + list(self.suppressed)
        _check(len(set(names)) == len(names), "features", "a column is named twice")
        for name in self.suppressed:
            _text(name, "suppressed")
        _check(all(f.count >= self.min_count for f in self.features), "features",
               "a column below min_count is reported")
        _range(self.timestamp, "timestamp", 0.0, 1e11)


MESSAGES: tuple[type[Message], ...] = (
    Manifest, Weights, Round, Presence, Update, Reply, Status, Chunk, TensorSet, StatsReport)
