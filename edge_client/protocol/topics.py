"""The topic tree: every topic and subscription filter of a federation, and strict parsing.

Topics live under ``{prefix}/v3/{federation}/...``; ids in them are safe ids
(:func:`~edge_client.protocol.ids.check_id`) so no id can add a level or a wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_client.protocol.ids import check_id
from edge_client.protocol.limits import (
    _NUMBER,
    _SHA256,
    DEFAULT_PREFIX,
    PROTOCOL_VERSION,
    InvalidTopic,
    _short,
)


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
    "manifest": (), "round": (), "status": (), "model": ("sha256", "index"),
    "weights": ("version", "index"),
    "presence": ("client_id",), "update": ("client_id",), "reply": ("client_id",),
    "stats": ("client_id",),
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
        The topic's kind (one of ``manifest model weights round presence update reply
        stats``)
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
        """``{prefix}/v3/{federation}``."""
        return f"{self.prefix}/v{PROTOCOL_VERSION}/{self.federation}"

    def manifest(self) -> str:
        """Retained manifest of the current global model."""
        return f"{self.base}/manifest"

    def status(self) -> str:
        """The aggregator's retained status summary."""
        return f"{self.base}/status"

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

    def stats(self, client_id: str) -> str:
        """Retained statistics report of a client's local table (``fedge stats``)."""
        return f"{self.base}/stats/{check_id(client_id, 'client_id')}"

    def stats_filter(self) -> str:
        """Subscription filter for every client's statistics report."""
        return f"{self.base}/stats/+"

    def reply(self, client_id: str) -> str:
        """Where the aggregator answers one client."""
        return f"{self.base}/reply/{check_id(client_id, 'client_id')}"

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

