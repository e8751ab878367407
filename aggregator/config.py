"""Aggregator configuration: TOML file, then flags, then environment for secrets.

Built once in ``__main__`` into a frozen :class:`AggregatorConfig`; nothing deeper
reads configuration. Precedence: command-line flag > TOML value > default. The TOML
keys are the flag names (``-`` or ``_``), at the top level or under ``[aggregator]``.
The MQTT password comes only from ``FEDGE_PASSWORD`` or ``--password-file``.
Every error names the flag it is about (the reader is :mod:`edge_client.settings`,
shared with the client).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aggregator.bounds import InfluenceBounds
from aggregator.fedavg import STRATEGIES, Strategy
from aggregator.intake import IntakeLimits
from aggregator.privacy import ACCOUNTANTS, DpSettings
from aggregator.schedule import DEFAULT_MAX_NEW_CLIENTS, DEFAULT_MAX_ONLINE, RoundsConfig
from edge_client.errors import ConfigError
from edge_client.protocol import (
    CODECS,
    MAX_CHUNK_BYTES,
    MAX_SELECTED,
    MAX_TRANSFER_BYTES,
    Hyperparameters,
    ProtocolError,
    Topics,
)
from edge_client.settings import Bounds, build_settings, provision_hint
from edge_client.transfer import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_TRANSFERS,
    DEFAULT_MAX_TRANSFERS_PER_SENDER,
)
from edge_client.transport import BrokerConfig, resolve_host


@dataclass(frozen=True)
class AggregatorConfig:
    """Everything ``fedge-aggregator`` needs (see ``fedge-aggregator --help``)."""

    model: Path | None = None
    initial_weights: Path | None = None  # .npz by weight name: version 0 of a new run
    broker: str = "mqtt://127.0.0.1:1883"
    client_id: str | None = None  # MQTT client id; None: fedge-aggregator-{federation}
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = None
    mqtt_version: str = "5"
    signing_key: Path | None = None  # Ed25519 key (PEM): signs manifests, rounds, replies
    # off: a broker other processes can reach needs TLS and --signing-key (check_exposure),
    # since on an open one anyone reads every update and can publish models as this service
    insecure: bool = False
    federation: str = "default"
    prefix: str = "fedge"
    rounds: int = 10
    min_clients: int = 2
    min_available: int | None = None
    clients_per_round: int | None = None
    fraction: float | None = None
    round_timeout: float = 60.0
    max_new_clients: int = DEFAULT_MAX_NEW_CLIENTS  # never-delivered ids selected per round
    max_online: int = DEFAULT_MAX_ONLINE  # presence table; ids that delivered always fit
    epochs: int = 1
    batch_size: int | None = None  # None: the model file's batch size
    lr: float | None = None  # None: the model file's learning rate
    mu: float = 0.0
    codec: str = "int8"
    strategy: str = "fedavg"
    server_lr: float | None = None
    weighting: str = "samples"
    max_samples_per_client: int | None = None
    weight_cap_factor: float = 3.0  # one site weighs at most 3x its round's median site
    clip_factor: float = 3.0  # one delta is clipped to 3x its round's median delta norm
    max_num_samples: int = 1_000_000
    max_update_norm: float = 1000.0
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_message_bytes: int = MAX_CHUNK_BYTES  # resource caps of the update intake
    max_transfer_bytes: int | None = None  # None: the model's fp32 update size plus framing
    max_transfers: int = DEFAULT_MAX_TRANSFERS  # memory is bounded by max_buffered_bytes
    max_transfers_per_client: int = DEFAULT_MAX_TRANSFERS_PER_SENDER
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    transfer_timeout: float | None = None  # None: max(30 s, 2 x round_timeout)
    # client-level differential privacy: off unless --dp-clip is given (docs/privacy.md)
    dp_clip: float | None = None
    dp_noise_multiplier: float | None = None
    dp_epsilon: float | None = None  # the budget; with no Z, Z is computed for --rounds
    dp_delta: float | None = None  # no default: it must suit the federation (< 1/devices)
    dp_accountant: str = "rdp"  # conservative and fast; pld is tighter
    dp_sampling_rate: float | None = None  # None: --fraction, else 1 (every online client)
    dp_adaptive_clip: bool = False  # C follows a quantile of the norms (Andrew et al. 2021)
    dp_clip_quantile: float = 0.5  # Andrew et al.'s recommended target: the median norm
    dp_clip_lr: float = 0.2  # Andrew et al.'s geometric step
    dp_clip_count_noise: float | None = None  # None: Z (the sum then gets 1.155 x Z)
    state_dir: Path = Path("fedge-aggregator-state")
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    seed: int = 0

    @property
    def mqtt_client_id(self) -> str:
        """The fixed MQTT client id, the key of the durable session."""
        return self.client_id or f"fedge-aggregator-{self.federation}"

    def topics(self) -> Topics:
        """The federation's topic tree."""
        return Topics(self.federation, self.prefix)

    def broker_config(self, fresh_session: bool = False) -> BrokerConfig:
        """A durable, manually acknowledged MQTT session with a fixed client id; a new
        run starts it fresh (``fresh_session``), so nothing queued for an earlier run
        reaches this one."""
        return BrokerConfig(
            url=self.broker, client_id=self.mqtt_client_id, username=self.username,
            password=self.password, ca=self.ca, cert=self.cert, key=self.key,
            mqtt_version=self.mqtt_version, durable=True, manual_ack=True,
            fresh_session=fresh_session,
        )

    def rounds_config(self, model_sha256: str, run_id: str = "",
                      sampling_seed: int | None = None) -> RoundsConfig:
        """The round policy of run ``run_id`` training the model with ``model_sha256``;
        with DP, selection is Poisson sampling seeded by the ledger's secret
        ``sampling_seed`` (not the public ``--seed``)."""
        dp = self.dp_settings()
        return RoundsConfig(
            federation=self.federation, model_sha256=model_sha256, run_id=run_id,
            total_rounds=self.rounds,
            min_clients=self.min_clients, clients_per_round=self.clients_per_round,
            fraction=None if dp else self.fraction, round_timeout=self.round_timeout,
            seed=self.seed if sampling_seed is None else sampling_seed,
            min_available=self.min_available, max_new_clients=self.max_new_clients,
            max_online=self.max_online, sampling_rate=dp.sampling_rate if dp else None,
        )

    def dp_settings(self) -> DpSettings | None:
        """Client-level DP (``--dp-*``), or None when it is off (no ``--dp-clip``).

        Raises:
            ConfigError: a ``--dp-*`` flag without ``--dp-clip``, or a combination that
                cannot work (the message names the flags).
        """
        if self.dp_clip is None:
            given = [f"--{n.replace('_', '-')}" for n in ("dp_noise_multiplier", "dp_epsilon",
                                                          "dp_delta", "dp_sampling_rate",
                                                          "dp_clip_count_noise")
                     if getattr(self, n) is not None]
            given += ["--dp-adaptive-clip"] if self.dp_adaptive_clip else []
            if given:
                raise ConfigError(f"{', '.join(given)} need --dp-clip C (differential privacy "
                                  "is on only with a clip norm)")
            return None
        if self.dp_delta is None:
            raise ConfigError("--dp-clip needs --dp-delta D, the δ of the guarantee (below "
                              "1 / the number of devices, e.g. 1e-5)")
        if self.clients_per_round is not None:
            raise ConfigError("--clients-per-round does not apply with --dp-clip: selection is "
                              "then Poisson sampling at --dp-sampling-rate q (or --fraction)")
        if (self.dp_sampling_rate is not None and self.fraction is not None
                and self.dp_sampling_rate != self.fraction):
            raise ConfigError(f"--dp-sampling-rate {self.dp_sampling_rate} and --fraction "
                              f"{self.fraction} differ: give one")
        if self.strategy in ("median", "trimmed-mean"):
            raise ConfigError(f"--strategy {self.strategy} does not work with --dp-clip: "
                              "the DP noise is calibrated to a sum (fedavg, fedavgm, fedadam)")
        rate = self.dp_sampling_rate or self.fraction or 1.0
        return DpSettings(clip=self.dp_clip, sampling_rate=rate, delta=self.dp_delta,
                          accountant=self.dp_accountant,
                          noise_multiplier=self.dp_noise_multiplier,
                          target_epsilon=self.dp_epsilon, adaptive=self.dp_adaptive_clip,
                          clip_quantile=self.dp_clip_quantile, clip_lr=self.dp_clip_lr,
                          count_noise=self.dp_clip_count_noise)

    def strategy_config(self) -> Strategy:
        """The aggregation strategy."""
        weighting: Literal["samples", "uniform"] = (
            "uniform" if self.weighting == "uniform" else "samples")
        return Strategy(name=self.strategy, weighting=weighting,
                        sample_cap=self.max_samples_per_client, server_lr=self.server_lr)

    def hyperparameters(self, batch_size: int, learning_rate: float | None) -> Hyperparameters:
        """The rounds' training settings; ``--batch-size``/``--lr`` default to the model's.

        Raises:
            ConfigError: a value the protocol does not allow.
        """
        try:
            return Hyperparameters(epochs=self.epochs, batch_size=self.batch_size or batch_size,
                                   learning_rate=self.lr or learning_rate or 0.01, mu=self.mu)
        except ProtocolError as e:
            raise ConfigError(f"--epochs/--batch-size/--lr/--mu: {e}") from None

    def bounds(self) -> InfluenceBounds:
        """The bounds on one party's influence (``--weight-cap-factor``, ``--clip-factor``)."""
        return InfluenceBounds(weight_factor=self.weight_cap_factor,
                               norm_factor=self.clip_factor)

    def limits(self) -> IntakeLimits:
        """Bounds every update must respect, and the resource caps of the update intake."""
        return IntakeLimits(
            max_norm=self.max_update_norm, max_num_samples=self.max_num_samples,
            max_message_bytes=self.max_message_bytes, max_transfer_bytes=self.max_transfer_bytes,
            max_transfers=self.max_transfers,
            max_transfers_per_client=self.max_transfers_per_client,
            max_buffered_bytes=self.max_buffered_bytes, transfer_timeout=self.transfer_timeout)


#: what the field types do not say: int ranges, float ranges, and the fields with choices
BOUNDS = Bounds(
    ints={
        "rounds": (1, 10**9), "min_clients": (1, MAX_SELECTED), "min_available": (1, 10**9),
        "clients_per_round": (1, MAX_SELECTED), "epochs": (1, 10_000),
        "batch_size": (1, 10**6), "max_samples_per_client": (1, 2**53),
        "max_num_samples": (1, 2**53), "max_payload": (1024, MAX_CHUNK_BYTES),
        "metrics_port": (0, 65535), "seed": (0, 2**63),
        "max_message_bytes": (1024, MAX_CHUNK_BYTES),
        "max_transfer_bytes": (1, MAX_TRANSFER_BYTES), "max_transfers": (1, 1_000_000),
        "max_transfers_per_client": (1, 1_000_000), "max_buffered_bytes": (1, 2**40),
        "max_new_clients": (1, MAX_SELECTED), "max_online": (1, 10**7),
    },
    floats={  # (low, high, whether low itself is allowed)
        "round_timeout": (0.0, 1e7, False), "lr": (0.0, 1000.0, False),
        "mu": (0.0, 1e6, True), "server_lr": (0.0, 1e6, False),
        "max_update_norm": (0.0, 1e30, False), "fraction": (0.0, 1.0, False),
        "transfer_timeout": (0.0, 1e7, False), "weight_cap_factor": (0.0, 1e6, True),
        "clip_factor": (0.0, 1e6, True), "dp_clip": (0.0, 1e30, False),
        "dp_noise_multiplier": (0.0, 1e6, False), "dp_epsilon": (0.0, 1e6, False),
        "dp_delta": (0.0, 1.0, False), "dp_sampling_rate": (0.0, 1.0, False),
        "dp_clip_quantile": (0.0, 1.0, False), "dp_clip_lr": (0.0, 10.0, False),
        "dp_clip_count_noise": (0.0, 1e6, False),
    },
    choices={
        "codec": CODECS, "strategy": STRATEGIES, "weighting": ("samples", "uniform"),
        "mqtt_version": ("5", "3.1.1"), "dp_accountant": ACCOUNTANTS,
    },
)


def build_config(args: argparse.Namespace,
                 env: Mapping[str, str] | None = None) -> AggregatorConfig:
    """Merges defaults, the TOML file (``args.config``), flags and secrets; checks everything.

    Raises:
        ConfigError: an unknown key, a bad value (the message names the flag), or a
            secret in the wrong place.
    """
    config = build_settings(AggregatorConfig, args, env, section="aggregator", bounds=BOUNDS)
    check(config)
    return config


def check(c: AggregatorConfig) -> None:
    """Cross-field checks; every message names the flags involved.

    Raises:
        ConfigError: the configuration cannot work.
    """
    if c.model is None:
        raise ConfigError("--model is required: a trainable .tflite file from `fedge export`")
    if c.clients_per_round is not None and c.fraction is not None:
        raise ConfigError("--clients-per-round and --fraction exclude each other; give one")
    if c.clients_per_round is not None and c.clients_per_round < c.min_clients:
        raise ConfigError(f"--clients-per-round {c.clients_per_round} is below "
                          f"--min-clients {c.min_clients}")
    if c.min_available is not None and c.min_available < c.min_clients:
        raise ConfigError(f"--min-available {c.min_available} is below "
                          f"--min-clients {c.min_clients}")
    for name, federation, prefix in (("--federation", c.federation, "fedge"),
                                     ("--prefix", "default", c.prefix)):
        try:
            Topics(federation, prefix)
        except ProtocolError as e:
            raise ConfigError(f"{name}: {e}") from None
    try:
        c.broker_config().endpoint()
    except ConfigError as e:
        raise ConfigError(f"--broker: {e}") from None
    for path_flag, path in (("--ca", c.ca), ("--cert", c.cert), ("--key", c.key),
                            ("--signing-key", c.signing_key),
                            ("--initial-weights", c.initial_weights)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path_flag} {path}: no such file")
    if (c.cert is None) != (c.key is None):
        raise ConfigError("--cert and --key go together (mutual TLS)")
    if c.max_transfer_bytes is not None and c.max_buffered_bytes < c.max_transfer_bytes:
        raise ConfigError(f"--max-buffered-bytes {c.max_buffered_bytes} is below "
                          f"--max-transfer-bytes {c.max_transfer_bytes}: no update would fit")
    c.strategy_config()
    c.limits()
    if 0 < c.weight_cap_factor < 1 or 0 < c.clip_factor < 1:
        raise ConfigError("--weight-cap-factor and --clip-factor must be 0 (off) or >= 1")
    if not c.min_clients <= c.max_new_clients <= c.max_online:
        raise ConfigError(f"need --min-clients {c.min_clients} <= --max-new-clients "
                          f"{c.max_new_clients} <= --max-online {c.max_online}: a new "
                          "federation could not reach its quorum otherwise")
    c.rounds_config("0" * 64)
    c.dp_settings()


def check_exposure(c: AggregatorConfig,
                   resolve: Callable[[str], list[str]] = resolve_host) -> list[str]:
    """Secure by default: a broker off this machine's loopback needs TLS and signing.

    On a broker that other machines reach, plain ``mqtt://`` lets anyone on the network
    read every device's update (and change it), and unsigned manifests let anyone who
    can publish there make devices load a model of theirs. ``--insecure`` runs anyway.

    Returns:
        The warnings to log (``--insecure`` on an exposed broker); [] when nothing is at risk.

    Raises:
        ConfigError: the broker is not on loopback and TLS or ``--signing-key`` is missing,
            without ``--insecure``; the message names what is missing and what to run.
    """
    broker = c.broker_config()
    if broker.on_loopback(resolve):
        return []
    host, _, tls = broker.endpoint()
    missing = {what: risk for what, risk, present in (
        ("TLS (an mqtts:// --broker)", "every device's update would cross the network in "
         "clear text", tls),
        ("--signing-key", "devices could not tell this aggregator's models from forged ones",
         c.signing_key is not None)) if not present}
    if not missing:
        return []
    said = (f"--broker {c.broker} is not a loopback address and this aggregator has no "
            f"{' and no '.join(missing)}: {', and '.join(missing.values())}")
    if c.insecure:
        return [f"--insecure: {said}"]
    raise ConfigError(f"{said}. To protect the federation, "
                      f"{provision_hint(c.federation, host)}; to run like this anyway "
                      "(a closed test network), pass --insecure")
