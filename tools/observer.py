"""A read-only look at a federation's retained topics: the flags and the connection.

``fedge status`` and ``fedge stats`` both subscribe to retained topics with any identity
allowed to read them, and never publish. They share the broker flags (:func:`add_flags`),
the topic namespace from ``--federation``/``--prefix`` (:func:`topics`) and the connection
(:func:`connect`), so a flag or its default cannot drift between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from pathlib import Path

from edge_client.errors import ConfigError, ProtocolError
from edge_client.protocol import Topics
from edge_client.settings import PASSWORD_ENV
from edge_client.transport import BrokerConfig, MqttTransport, TransportError

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"  # a broker on this machine, without TLS


def add_flags(p: argparse.ArgumentParser, *, cert_help: str = "client certificate "
              "(mutual TLS)") -> None:
    """Adds --broker, --federation, --prefix, --ca, --cert, --key, --username, --mqtt-version."""
    p.add_argument("--broker", default=DEFAULT_BROKER, metavar="URL",
                   help=f"mqtt://host:port or mqtts://host:port; default {DEFAULT_BROKER}")
    p.add_argument("--federation", default="default", metavar="NAME",
                   help="federation name; default default")
    p.add_argument("--prefix", default="fedge", help="topic prefix; default fedge")
    p.add_argument("--ca", type=Path, metavar="PEM", help="CA certificate to verify the broker")
    p.add_argument("--cert", type=Path, metavar="PEM", help=cert_help)
    p.add_argument("--key", type=Path, metavar="PEM", help="client private key (mutual TLS)")
    p.add_argument("--username", help=f"MQTT username (password from {PASSWORD_ENV})")
    p.add_argument("--mqtt-version", choices=["5", "3.1.1"], default="5", help="default 5")


def topics(args: argparse.Namespace) -> Topics:
    """The topic namespace of ``--federation`` and ``--prefix``; ConfigError naming them."""
    try:
        return Topics(args.federation, args.prefix)
    except ProtocolError as e:
        raise ConfigError(f"--federation/--prefix: {e}") from None


def connect(args: argparse.Namespace, command: str) -> MqttTransport | None:
    """A started, non-durable connection for ``fedge <command>``; None (said on stderr) if the
    broker cannot be reached within ``args.timeout``."""
    transport = MqttTransport(BrokerConfig(
        url=args.broker, client_id=f"fedge-{command}-{uuid.uuid4().hex[:8]}",
        username=args.username, password=os.environ.get(PASSWORD_ENV), ca=args.ca,
        cert=args.cert, key=args.key, mqtt_version=args.mqtt_version, durable=False))
    try:
        transport.start(wait=args.timeout)
    except TransportError as e:
        print(f"fedge {command}: error: {e}", file=sys.stderr)
        return None
    return transport
