"""Ids on the wire: the one id rule, and the transfer ids of updates.

Every id fedge puts in a topic, a message or a file name (client ids, federations,
key ids, transfer ids, topic prefix segments) follows one rule, :data:`ID_RULE`: so
no id can add a topic level or a wildcard, and none is ``.``, ``..`` or starts with
``-`` where it names a file (a client's state, the aggregator's stored updates).

An update travels as a chunked transfer whose id carries its round and nonce, so
the aggregator can answer even an update that does not decode:
``u-{round_id}-{nonce hex}`` and, for a (re-)send, ``-{attempt}`` after it. (Its run is in
the update itself: an id holds at most 64 characters and the nonce takes 32 of them.)
Global weights travel as ``weights-{run_id}-{version}``, so that a copy of another run's
version N (queued in a device's old broker session) is never taken for this run's.
"""

from __future__ import annotations

import re

from edge_client.protocol.limits import _ID, ID_RULE, InvalidTopic, _short

_MAX_ROUND_ID = 2**53  # every message's round_id is at most this (an exact float in JSON)
#: ``u-{round_id}-{nonce hex}``, then optionally ``-`` and anything an id allows
_UPDATE_TRANSFER = re.compile(
    r"u-(0|[1-9][0-9]{0,15})-((?:[0-9a-f]{2}){8,64})(?:-[A-Za-z0-9_.-]*)?")


def is_id(value: object) -> bool:
    """Whether ``value`` is a str following :data:`ID_RULE`."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it follows :data:`ID_RULE` (a safe id).

    Raises:
        InvalidTopic: naming ``what`` and the offending value.
    """
    if not is_id(value):
        raise InvalidTopic(f"{what} {_short(value)}: must be {ID_RULE} (no '/', '+', '#')")
    return value


def update_transfer_id(round_id: int, nonce: bytes, attempt: int | None = None) -> str:
    """The transfer id of an update: ``u-{round_id}-{nonce hex}[-{attempt}]``.

    Args:
        round_id: the update's round.
        nonce: the update's nonce (8-64 bytes; the id holds at most 64 characters, so a
            16-byte nonce, as the reference client uses, always fits).
        attempt: which send of the same update this is (0, 1, ...), so that a re-send
            gets a new id; None: no suffix (a first send may omit it).

    Raises:
        InvalidTopic: a value no update carries, or an id longer than 64 characters.
    """
    if isinstance(round_id, bool) or not isinstance(round_id, int) or not (
            0 <= round_id <= _MAX_ROUND_ID):
        raise InvalidTopic(f"round_id {_short(round_id)}: must be an integer in [0, 2^53]")
    if not isinstance(nonce, bytes) or not 8 <= len(nonce) <= 64:
        raise InvalidTopic(f"nonce {_short(nonce)}: must be 8-64 bytes")
    if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)
                                or attempt < 0):
        raise InvalidTopic(f"attempt {_short(attempt)}: must be an integer >= 0")
    suffix = "" if attempt is None else f"-{attempt}"
    return check_id(f"u-{round_id}-{nonce.hex()}{suffix}", "update transfer id")


def parse_update_transfer_id(text: str) -> tuple[int, bytes] | None:
    """(round id, nonce) named by an update's transfer id, or None if it names none.

    Accepts what :func:`update_transfer_id` builds and, after the nonce, any suffix
    ``-[A-Za-z0-9_.-]*`` (other senders count their re-sends differently). None for
    anything else, and for a round id above 2^53, which no message can carry.
    """
    found = _UPDATE_TRANSFER.fullmatch(text) if isinstance(text, str) else None
    if found is None or int(found[1]) > _MAX_ROUND_ID:
        return None
    return int(found[1]), bytes.fromhex(found[2])


def weights_transfer_id(run_id: str, version: int) -> str:
    """The transfer id of global weights ``version`` of run ``run_id``
    (``weights-{version}`` outside any run)."""
    if isinstance(version, bool) or not isinstance(version, int) or not (
            0 <= version <= _MAX_ROUND_ID):
        raise InvalidTopic(f"version {_short(version)}: must be an integer in [0, 2^53]")
    run = f"{check_id(run_id, 'run id')}-" if run_id else ""
    return check_id(f"weights-{run}{version}", "weights transfer id")
