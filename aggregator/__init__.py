"""fedge's aggregator: the pure round object and aggregation maths, and the service shell
that runs a federation over MQTT (``fedge-aggregator``; docs/aggregator.md)."""

from aggregator.fedavg import STRATEGIES, ServerState, Strategy
from aggregator.global_model import GlobalModel
from aggregator.reasons import Reason, Rejection
from aggregator.round import Decision, Round
from aggregator.schedule import RoundsConfig, RoundState
from aggregator.validation import ReceivedUpdate, UpdateLimits

__all__ = [
    "STRATEGIES",
    "Decision",
    "GlobalModel",
    "Reason",
    "ReceivedUpdate",
    "Rejection",
    "Round",
    "RoundState",
    "RoundsConfig",
    "ServerState",
    "Strategy",
    "UpdateLimits",
]
