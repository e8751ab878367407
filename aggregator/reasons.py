"""Why an update was turned away: one :class:`Reason` for every rejection, wherever it happens.

The value of a reason is the code a client reads at the start of its ``Reply.reason``, the
label of the ``fedge_updates_rejected_total`` metric and the key of a history line's
``rejections``; docs/aggregator.md lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from edge_client.protocol import REASON_BUSY

MAX_REASON = 256  # Reply.reason is at most 256 characters (docs/protocol.md)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class Reason(str, Enum):
    """Why an update (or a chunk of one) was rejected; the value is the code sent back."""

    # the transfer: before there is an update
    MALFORMED = "malformed"  # a chunk or update payload that does not decode
    TRANSFER = "transfer"  # a chunk over a reassembly cap, inconsistent, or failing its SHA-256
    BUSY = REASON_BUSY  # temporary: no room for the transfer now; the client re-sends it
    CLIENT_ID = "client_id"  # the update's client_id is not the topic's client id
    CODEC = "codec"  # the update does not use the codec the round asks for
    STORE = "store"  # the update could not be persisted (disk full?): not acknowledged
    # identity
    FEDERATION = "federation"  # another federation
    RUN = "run"  # another run of the federation (an earlier state directory)
    MODEL_HASH = "model_hash"  # trained another model file
    # admission to the round
    WRONG_ROUND = "wrong_round"  # a round that was never announced
    LATE = "late"  # answers the round that closed most recently
    STALE = "stale"  # an older round, or trained from an older global model
    BASE_VERSION = "base_version"  # a global model version that does not exist yet
    NOT_SELECTED = "not_selected"  # the client was not selected for this round
    DUPLICATE = "duplicate"  # the client already has an accepted update in this round
    # content
    NUM_SAMPLES = "num_samples"  # <= 0 (above --max-num-samples it is clipped, not refused)
    NAME = "name"  # missing or unexpected tensor
    DTYPE = "dtype"
    SHAPE = "shape"
    NAN = "nan"
    INF = "inf"
    NORM = "norm"  # L2 norm of the whole delta above the bound
    EVALUATION = "evaluation"  # evaluation counts that do not decode or do not add up


@dataclass(frozen=True)
class Rejection:
    """A rejection: its code and a message naming the field, tensor or cap."""

    reason: Reason
    message: str

    def reply_text(self) -> str:
        """``"code: message"`` as a Reply carries it: no control characters, at most 256."""
        text = _CONTROL.sub("?", f"{self.reason.value}: {self.message}")
        return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
