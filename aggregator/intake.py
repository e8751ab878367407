"""From a reassembled update payload to a :class:`~aggregator.validation.ReceivedUpdate`.

Pure functions: decode strictly, check what only the service can check (the topic's
client id, the round's codec), dequantize. What goes wrong raises :class:`Refused`
with a reason code; the codes here complement :class:`~aggregator.validation.Reason`
(content checks) and :data:`TRANSFER` / :data:`MALFORMED` (chunks that never become
an update). Every code is listed in docs/aggregator.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from aggregator.validation import ReceivedUpdate
from edge_client.errors import ValidationError
from edge_client.protocol import MalformedMessage, Update
from edge_client.quantize import dequantize_update

MALFORMED = "malformed"  # a chunk or update payload that does not decode
TRANSFER = "transfer"  # a chunk over a reassembly cap, inconsistent, or failing its SHA-256
CLIENT_ID = "client_id"  # the update's client_id is not the topic's client id
CODEC = "codec"  # the update does not use the codec the round asks for
STORE = "store"  # the update could not be persisted (disk full?): not acknowledged

_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
#: ``u-{round_id}-{nonce hex}``, optionally ``-{attempt}`` (docs/protocol.md, Chunking)
_UPDATE_TRANSFER = re.compile(
    r"u-(0|[1-9][0-9]{0,15})-((?:[0-9a-f]{2}){8,64})(?:-[A-Za-z0-9_.-]*)?")
MAX_REASON = 256  # Reply.reason is at most 256 characters
MAX_ROUND_ID = 2**53  # Reply.round_id is an int <= 2^53 (docs/protocol.md)


class Refused(ValidationError):
    """An update the service turns away before content validation.

    Attributes:
        reason: the reason code sent to the client and counted.
        update: the decoded update when there is one (so a reply can carry its nonce).
    """

    def __init__(self, reason: str, message: str, update: Update | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.update = update


@dataclass(frozen=True)
class Addressee:
    """Whom a reply goes to, and what it echoes."""

    client_id: str
    round_id: int
    nonce: bytes


def addressee(sender: str, update: Update | None, transfer_id: str) -> Addressee | None:
    """Where to answer an update from ``sender`` (the topic's client id).

    From the decoded update when there is one; else, for a payload that does not
    decode, from its transfer id ``u-{round_id}-{nonce hex}[-…]``; else None.
    """
    if update is not None:
        return Addressee(sender, update.round_id, update.nonce)
    found = _UPDATE_TRANSFER.fullmatch(transfer_id)
    if found is None or int(found[1]) > MAX_ROUND_ID:  # a Reply could not carry that round
        return None
    return Addressee(sender, int(found[1]), bytes.fromhex(found[2]))


@dataclass(frozen=True)
class Arrival:
    """A decoded update together with what it came as."""

    update: Update
    received: ReceivedUpdate
    payload: bytes

    @property
    def addressee(self) -> Addressee:
        """The update's sender, round and nonce."""
        return Addressee(self.update.client_id, self.update.round_id, self.update.nonce)


def decode_update(payload: bytes, sender: str, codec: str) -> Arrival:
    """Decode the reassembled ``payload`` that ``sender`` (the topic's client id) published.

    Args:
        payload: the whole update payload, untrusted.
        sender: the client id in the topic the chunks came on.
        codec: the codec the round requires.

    Raises:
        Refused: with reason :data:`MALFORMED`, :data:`CLIENT_ID` or :data:`CODEC`.
    """
    try:
        update = Update.decode(payload)
    except MalformedMessage as e:
        raise Refused(MALFORMED, f"update from {sender} does not decode: {e}") from None
    if update.client_id != sender:
        raise Refused(CLIENT_ID, f"update names client {update.client_id!r} but came on the "
                      f"topic of {sender!r}", update)
    if update.codec != codec:
        raise Refused(CODEC, f"update uses codec {update.codec}, the round asks for {codec}",
                      update)
    return Arrival(update, received(update, len(payload)), payload)


def received(update: Update, size: int) -> ReceivedUpdate:
    """The core's view of a decoded update: dequantized float32 delta, nonce in hex."""
    with np.errstate(over="ignore"):  # int8 × a huge scale may overflow: validation says "inf"
        delta = dequantize_update(update.tensors)
    return ReceivedUpdate(
        federation=update.federation, round_id=update.round_id, client_id=update.client_id,
        base_version=update.base_version, model_sha256=update.model_sha256,
        nonce=update.nonce.hex(), num_samples=update.num_samples,
        delta=delta, metrics=dict(update.metrics),
        bytes_received=size,
    )


def reason_text(code: str, message: str) -> str:
    """``"code: message"`` as a Reply carries it: no control characters, at most 256."""
    text = _CONTROL.sub("?", f"{code}: {message}")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
