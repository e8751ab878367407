"""Client configuration: TOML file, then flags, then environment for secrets.

Built once in ``__main__`` into a frozen :class:`ClientConfig`; nothing deeper
reads configuration. Precedence: command-line flag > TOML value > default. The TOML
keys are the flag names (``-`` or ``_``), at the top level or under ``[client]``.
The MQTT password comes only from ``FEDGE_PASSWORD`` or ``--password-file``, never
from flags or TOML. Every error names the flag it is about (the reader is
:mod:`edge_client.settings`, shared with the aggregator).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_client.errors import ConfigError
from edge_client.settings import Bounds, build_settings, provision_hint
from edge_client.transfer import DEFAULT_MAX_PAYLOAD
from edge_client.transport import BrokerConfig, resolve_host


@dataclass(frozen=True)
class ClientConfig:
    """Everything the edge client needs to run (see ``fedge-client --help``)."""

    broker: str = "mqtt://127.0.0.1:1883"
    federation: str = "default"
    prefix: str = "fedge"
    client_id: str | None = None  # None: generated once and kept in the state dir
    data: Path | None = None
    schema: Path | None = None  # the federation's schema (edge_client.schema); None: plain CSV
    # small-cell suppression of the statistics report: 10 is the usual threshold of health
    # statistics offices; a column with fewer values is not reported at all
    min_count: int = 10
    stats: bool = True  # with --schema, publish the table's statistics for `fedge stats`
    label_column: str | None = None
    features: tuple[str, ...] | None = None  # None: every column but the label
    window: int | None = None
    stride: int | None = None
    group_column: str | None = None
    state_dir: Path = Path("fedge-state")
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None
    mqtt_version: str = "5"
    once: bool = False
    max_rounds: int | None = None
    threads: int = 1  # a small device: one interpreter thread leaves a core for the rest
    max_payload: int = DEFAULT_MAX_PAYLOAD
    verify_key: Path | None = None
    # off: on a broker other machines reach, a device needs --verify-key (check_exposure),
    # since without it anyone who can publish there makes it load and train their model
    insecure: bool = False
    seed: int | None = None
    normalise: bool = True
    eval_data: Path | None = None  # a labelled test file: its counts go to the aggregator
    holdout: float = 0.2  # share of the local samples kept for the client's own evaluation
    # a new process starts its broker session fresh: what an earlier one left queued in it
    # (an earlier run's manifests, rounds, chunks) must not reach this one; nothing needed
    # lives there (model, weights and round are retained, unanswered updates in the outbox)
    resume_session: bool = False


#: what the field types do not say: int ranges (no upper bound) and the MQTT versions
BOUNDS = Bounds(
    ints={"window": (1, None), "stride": (1, None), "max_rounds": (1, None),
          "threads": (1, None), "max_payload": (1, None), "seed": (0, None),
          "min_count": (1, None)},
    floats={"holdout": (0.0, 0.9, True)},
    choices={"mqtt_version": ("5", "3.1.1")},
)


def build_config(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> ClientConfig:
    """Merges defaults, the TOML file (``args.config``), flags and the password.

    Raises:
        ConfigError: an unknown key, a bad value (the message names the flag), or the
            password in the config file.
    """
    return build_settings(ClientConfig, args, env, section="client", bounds=BOUNDS)


def check_exposure(c: ClientConfig,
                   resolve: Callable[[str], list[str]] = resolve_host) -> list[str]:
    """Secure by default: on a broker off this machine's loopback, a device needs
    ``--verify-key``; without it anyone who can publish there makes it load, train and
    run a model and weights of theirs. ``--insecure`` runs anyway.

    Returns:
        The warnings to log: ``--insecure`` on an exposed broker, or plain ``mqtt://``
        there (this device's updates cross the network in clear text).

    Raises:
        ConfigError: the broker is not on loopback and ``--verify-key`` is missing, without
            ``--insecure``; the message says what to run instead.
    """
    broker = BrokerConfig(url=c.broker, client_id="check")
    try:
        host, _, tls = broker.endpoint()
    except ConfigError as e:
        raise ConfigError(f"--broker: {e}") from None
    if broker.on_loopback(resolve):
        return []
    warnings = [] if tls else [
        f"--broker {c.broker} is plain mqtt:// and not a loopback address: this device's "
        "updates cross the network in clear text; use mqtts:// (see `fedge provision`)"]
    if c.verify_key is not None:
        return warnings
    said = (f"--broker {c.broker} is not a loopback address and there is no --verify-key: "
            "anyone who can publish on the broker could make this device load and train a "
            "model and weights of theirs")
    if c.insecure:
        return [f"--insecure: {said}", *warnings]
    raise ConfigError(f"{said}. To protect the federation, {provision_hint(c.federation, host)} "
                      "(a device gets --verify-key signing.pub); to run like this anyway "
                      "(a closed test network), pass --insecure")
