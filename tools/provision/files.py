"""The files ``fedge provision`` renders: the plan, the Mosquitto config, the ACL, the
password hashes and the README.txt (no keys or certificates: see :mod:`tools.provision.command`)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from edge_client.protocol import MAX_CHUNK_BYTES, Topics
from edge_client.transfer import DEFAULT_MAX_PAYLOAD
from tools.runtime.broker import max_packet_bytes

PBKDF2_ITERATIONS = 10_000  # passwords are random 256-bit tokens: not brute-forceable anyway
BROKER_USER = "mosquitto"  # Debian's mosquitto, started as root, drops to this user


@dataclass(frozen=True)
class Plan:
    """What to provision (``fedge provision --help``)."""

    out: Path
    devices: tuple[str, ...]
    federation: str = "default"
    prefix: str = "fedge"
    hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    port: int = 8883
    bind: str | None = None
    days: int = 365
    passwords: bool = False
    aggregator: str = "aggregator"
    force: bool = False
    max_payload: int = MAX_CHUNK_BYTES  # the largest MQTT payload the federation may carry

    @property
    def topics(self) -> Topics:
        """The federation's topic tree."""
        return Topics(self.federation, self.prefix)


def password_hash(password: str, *, iterations: int = PBKDF2_ITERATIONS,
                  salt: bytes | None = None) -> str:
    """A Mosquitto 2.0 password-file hash: ``$7$iterations$salt$hash`` (PBKDF2-SHA512)."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def render_acl(plan: Plan) -> bytes:
    """The ACL: per-device write on its own topics, read on global ones; the aggregator."""
    tp = plan.topics
    wide = {kind: f"{tp.base}/{kind}/#" for kind in ("model", "weights")}
    global_topics = [tp.manifest(), wide["model"], wide["weights"], tp.round()]
    lines = [f"# fedge ACL: federation {plan.federation!r}, prefix {plan.prefix!r}.",
             "# Whatever is not granted here is denied.", "", f"user {plan.aggregator}"]
    lines += [f"topic write {t}" for t in [*global_topics, f"{tp.base}/reply/+"]]
    lines += [f"topic readwrite {tp.status()}"]  # read: `fedge status` with this identity
    lines += [f"topic read {t}" for t in (tp.presence_filter(), tp.update_filter(),
                                          tp.stats_filter())]  # stats: for `fedge stats`
    for d in plan.devices:
        lines += ["", f"user {d}"]
        lines += [f"topic write {t}" for t in (tp.update(d), tp.presence(d), tp.stats(d))]
        lines += [f"topic read {t}" for t in [*global_topics, tp.reply(d)]]
    return ("\n".join(lines) + "\n").encode()


def render_config(plan: Plan) -> str:
    """``mosquitto.conf``: one TLS listener, no anonymous access, the ACL, persistence."""
    b = plan.out / "broker"
    auth = ([f"password_file {b / 'passwd'}"] if plan.passwords else
            ["require_certificate true", "use_identity_as_username true"])
    lines = [
        f"# Mosquitto 2.0 config of fedge federation {plan.federation!r} (fedge provision).",
        f"# Start: mosquitto -c {b / 'mosquitto.conf'}", "per_listener_settings false",
        "allow_anonymous false", f"acl_file {b / 'acl'}", *auth[:1 if plan.passwords else 0],
        "persistence true", f"persistence_location {b / 'data'}/", "autosave_interval 30",
        "# the default 1000 silently drops QoS 1 messages queued for a slow aggregator",
        "max_queued_messages 0",
        f"# payloads up to {plan.max_payload} bytes (fedge provision --max-payload) + 128 KiB "
        "for topic and properties; a larger packet is refused by its header",
        f"max_packet_size {max_packet_bytes(plan.max_payload)}",
        "log_dest stderr", "log_type error", "log_type warning", "log_type notice",
        f"listener {plan.port}{' ' + plan.bind if plan.bind else ''}",
        f"cafile {b / 'ca.pem'}", f"certfile {b / 'broker.pem'}", f"keyfile {b / 'broker.key'}",
        "tls_version tlsv1.2", *([] if plan.passwords else auth),
        "# the MQTT client id becomes the user name: no one can take over another's session",
        "use_username_as_clientid true",
    ]
    return "\n".join(lines) + "\n"


def render_readme(plan: Plan, signing_id: str) -> str:
    """README.txt: what each file is, who gets it, and the exact start commands."""
    o, url, dev = plan.out, f"mqtts://{plan.hosts[0]}:{plan.port}", plan.devices[0]
    a, d, b = o / "aggregator", o / "devices" / dev, o / "broker"
    common = f"--broker {url} --federation {plan.federation} --prefix {plan.prefix}"
    if plan.max_payload < DEFAULT_MAX_PAYLOAD:  # the parties' default chunks would not fit
        common += f" --max-payload {plan.max_payload}"
    if plan.passwords:
        creds = "password          its MQTT password (0600); the MQTT user name is its id"
        auth_a = f"--username {plan.aggregator} --password-file {a / 'password'}"
        auth_d = f"--username {dev} --password-file {d / 'password'}"
    else:
        creds = "*.pem, *.key      its client certificate (CN = its id) and key (0600)"
        auth_a = f"--cert {a / 'aggregator.pem'} --key {a / 'aggregator.key'}"
        auth_d = f"--cert {d / 'device.pem'} --key {d / 'device.key'}"
    owned = "broker.key, passwd and data/" if plan.passwords else "broker.key and data/"
    owner = (f"{owned} belong to user {BROKER_USER}, as Mosquitto started as root drops to it"
             if os.geteuid() == 0 else f"if root starts Mosquitto (it then drops to user "
             f"{BROKER_USER}), first run: chown -R {BROKER_USER}: {b}")
    return "\n".join([
        f"fedge federation {plan.federation!r}, topic prefix {plan.prefix!r} (fedge provision)",
        f"Broker {url}; devices {', '.join(plan.devices)}; signing key id {signing_id}.",
        "", "Private keys and passwords are mode 0600, certificates 0644.",
        "  ca/ca.pem           the CA certificate: every party checks the others against it",
        "  ca/ca.key           the CA private key: it can mint any identity. Keep it offline.",
        "  broker/             for the broker host",
        f"    mosquitto.conf    TLS listener on port {plan.port}, no anonymous access, the ACL,",
        f"                      MQTT payloads up to {plan.max_payload} bytes (max_packet_size)",
        "    acl               a device writes only its own update/presence/stats topics and reads",
        f"                      the global ones and its replies; only {plan.aggregator} "
        "publishes global ones",
        f"    broker.pem/.key   server certificate (CN/SAN {', '.join(plan.hosts)}) and key",
        *(["    passwd            password hashes ($7$, PBKDF2-SHA512)"] if plan.passwords
          else []),
        "    data/             persistence: retained model and weights, durable sessions",
        f"    ({owner})",
        "  aggregator/         for the aggregator host",
        f"    {creds}",
        "    signing.key       Ed25519 key signing every manifest (model + weights): keep it here",
        "  devices/ID/         for device ID only (e.g. copy it to /etc/fedge/)",
        f"    {creds}",
        "    signing.pub       the aggregator's public key: models not signed by it are refused",
        "  Every folder has ca.pem, to check the broker's certificate.",
        "", "Start the broker (Mosquitto 2.0):", f"  mosquitto -c {b / 'mosquitto.conf'}",
        "Start the aggregator:",
        f"  fedge-aggregator {common} --ca {a / 'ca.pem'} {auth_a} \\",
        f"      --signing-key {a / 'signing.key'} --model MODEL.tflite --state-dir STATE",
        f"Start device {dev} (the others alike, each with its own folder and id):",
        f"  fedge-client {common} --client-id {dev} --ca {d / 'ca.pem'} {auth_d} \\",
        f"      --verify-key {d / 'signing.pub'} --data DATA.csv --label-column LABEL",
        "--client-id must be the device's id: the ACL lets it publish only under that id.",
        "Threat model, rotating keys: docs/security.md.", ""])
