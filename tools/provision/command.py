"""``fedge provision``: keys, certificates and a locked-down Mosquitto config for one federation.

Writes, with ``cryptography``, an EC P-256 certificate authority; a broker server
certificate; one client certificate per device (CN = device id) and one for the
aggregator; a Mosquitto config with a TLS listener that requires client certificates
and takes the certificate's CN as the user name; an ACL in which each device may
publish only its own ``update``/``presence`` topics and read the global topics and
its own replies, and only the aggregator publishes global topics and replies; and an
Ed25519 key pair that signs global models. ``--passwords`` swaps client certificates
for a Mosquitto password file (random passwords; ``$7$`` PBKDF2-SHA512 hashes, the
format of ``mosquitto_passwd`` in Mosquitto 2.0). Private keys are written 0600,
certificates 0644. See ``docs/security.md`` and the README.txt written into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import pwd
import re
import secrets
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_client.errors import ConfigError, ProtocolError
from edge_client.protocol import MAX_CHUNK_BYTES
from edge_client.signing import SigningKey
from tools.provision.files import (
    BROKER_USER,
    Plan,
    password_hash,
    render_acl,
    render_config,
    render_readme,
)

log = logging.getLogger(__name__)
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a protocol id and a client id
MIN_PAYLOAD = 1024  # the smallest --max-payload/--max-message-bytes the parties take
Key = ec.EllipticCurvePrivateKey


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``fedge provision``."""
    p = sub.add_parser("provision", help="CA, certificates, signing key, Mosquitto config + ACL",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory "
                   "(must be new or empty unless --force)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--devices", type=int, metavar="N", help="N devices: dev-1 … dev-N")
    who.add_argument("--device-ids", metavar="A,B,C", help="comma-separated device ids")
    p.add_argument("--federation", default="default", help="federation id; default default")
    p.add_argument("--prefix", default="fedge", help="topic prefix; default fedge")
    p.add_argument("--broker-host", action="append", metavar="NAME|IP", help="DNS name or IP "
                   "devices use to reach the broker (repeat); default localhost and 127.0.0.1")
    p.add_argument("--port", type=int, default=8883, help="TLS listener port; default 8883")
    p.add_argument("--bind", metavar="ADDR", help="listen address; default all interfaces")
    p.add_argument("--days", type=int, default=365, help="validity of the broker, aggregator "
                   "and device certificates; the CA gets max(days, 3650); default 365")
    p.add_argument("--aggregator-name", default="aggregator", help="CN (MQTT user) of the "
                   "aggregator; default aggregator")
    p.add_argument("--passwords", action="store_true", help="authenticate clients with a "
                   "Mosquitto password file instead of client certificates (still TLS)")
    p.add_argument("--max-payload", type=int, default=MAX_CHUNK_BYTES, metavar="BYTES",
                   help="largest MQTT payload (one chunk) the broker passes: its "
                   "max_packet_size is this + 128 KiB for topic and properties; at least the "
                   "parties' --max-payload and the aggregator's --max-message-bytes; at most "
                   f"{MAX_CHUNK_BYTES}; default {MAX_CHUNK_BYTES} (8 MiB)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``fedge provision``: checks the flags, writes everything, prints where."""
    plan = plan_from(args)
    provision(plan)
    closed = next((p for p in plan.out.parents if not p.stat().st_mode & 0o001), None)
    if closed is not None:
        log.warning("%s is not searchable by other users: Mosquitto, started as root, runs as "
                    "user %s and will not reach %s (chmod o+x it, or move broker/)", closed,
                    BROKER_USER, plan.out / "broker")
    print(f"provisioned federation {plan.federation!r} for {len(plan.devices)} device(s) in "
          f"{plan.out}; read {plan.out / 'README.txt'}")
    return 0


def plan_from(args: argparse.Namespace) -> Plan:
    """A checked :class:`Plan` from the parsed flags.

    Raises:
        ConfigError: a bad id, port, number of days or host; the message names the flag.
    """
    if args.device_ids is not None:
        devices = tuple(d.strip() for d in args.device_ids.split(","))
    elif args.devices < 1:
        raise ConfigError(f"--devices: expected at least 1, got {args.devices}")
    else:
        devices = tuple(f"dev-{i}" for i in range(1, args.devices + 1))
    plan = Plan(out=Path(args.out).resolve(), devices=devices, federation=args.federation,
                prefix=args.prefix, hosts=tuple(args.broker_host or Plan.hosts),
                port=args.port, bind=args.bind, days=args.days, passwords=args.passwords,
                aggregator=args.aggregator_name, force=args.force,
                max_payload=args.max_payload)
    check(plan)
    return plan


def check(plan: Plan) -> None:
    """Raises ConfigError for anything that would make an unusable federation."""
    for name in (*plan.devices, plan.aggregator):
        if not _DEVICE_ID.fullmatch(name):
            raise ConfigError(f"device id {name!r}: use 1-64 letters, digits, '_' or '-', "
                              "starting with a letter or digit")
    if len(set(plan.devices)) != len(plan.devices) or plan.aggregator in plan.devices:
        raise ConfigError("device ids must be unique and differ from --aggregator-name")
    try:
        plan.topics  # noqa: B018  (validates federation and prefix)
    except ProtocolError as e:
        raise ConfigError(f"--federation/--prefix: {e}") from None
    if not 1 <= plan.port <= 65535 or not 1 <= plan.days <= 36500:
        raise ConfigError(f"--port {plan.port} / --days {plan.days}: out of range")
    if not MIN_PAYLOAD <= plan.max_payload <= MAX_CHUNK_BYTES:
        raise ConfigError(f"--max-payload {plan.max_payload}: must be in [{MIN_PAYLOAD}, "
                          f"{MAX_CHUNK_BYTES}] bytes (fedge never sends a larger chunk)")
    if not plan.hosts or any(not h or "/" in h for h in plan.hosts):
        raise ConfigError(f"--broker-host: bad host in {plan.hosts}")


def provision(plan: Plan) -> None:
    """Writes the CA, every key and certificate, the broker config, ACL and README.txt.

    Raises:
        ConfigError: ``plan.out`` holds other files, or is not empty without ``force``.
    """
    _prepare(plan.out, plan.force)
    folders = {"ca": 0o700, "broker": 0o755, "aggregator": 0o700, "devices": 0o755,
               **{f"devices/{d}": 0o700 for d in plan.devices}}
    for name, mode in folders.items():  # the broker (user mosquitto) must reach broker/
        (plan.out / name).mkdir(mode=mode)
        (plan.out / name).chmod(mode)
    ca_key, ca = _certificate(plan, "fedge federation CA " + plan.federation, None, None)
    _write_pair(plan.out / "ca", "ca", ca_key, ca)
    signing = SigningKey.generate()
    hashes_ = _write_parties(plan, ca_key, ca, signing)
    _write(plan.out / "aggregator" / "signing.key", signing.private_pem(), 0o600)
    _write_broker(plan, ca_key, ca, hashes_)
    _write(plan.out / "README.txt", render_readme(plan, signing.key_id).encode(), 0o644)


def _write_parties(plan: Plan, ca_key: Key, ca: x509.Certificate,
                   signing: SigningKey) -> list[str]:
    """Each client's folder: CA, certificate and key (or password), signing.pub.

    Returns:
        The password-file lines (``--passwords``), else an empty list.
    """
    parties = [(plan.out / "aggregator", plan.aggregator, "aggregator")]
    parties += [(plan.out / "devices" / d, d, "device") for d in plan.devices]
    lines = []
    for folder, name, stem in parties:
        _write(folder / "ca.pem", _pem(ca), 0o644)
        if plan.passwords:
            password = secrets.token_urlsafe(32)
            _write(folder / "password", password.encode() + b"\n", 0o600)
            lines.append(f"{name}:{password_hash(password)}")
        else:
            _write_pair(folder, stem, *_certificate(plan, name, ca_key, ca))
        _write(folder / "signing.pub", signing.public_pem(), 0o644)
    return lines


def _write_broker(plan: Plan, ca_key: Key, ca: x509.Certificate, passwd: list[str]) -> None:
    """The broker's folder; what Mosquitto reads after dropping to its user is its own."""
    broker = plan.out / "broker"
    key, cert = _certificate(plan, plan.hosts[0], ca_key, ca, server=True)
    _write_pair(broker, "broker", key, cert, owner=BROKER_USER)
    _write(broker / "ca.pem", _pem(ca), 0o644)
    (broker / "data").mkdir(mode=0o700)
    _give_to_broker(broker / "data")
    _write(broker / "acl", render_acl(plan), 0o644)
    if passwd:
        _write(broker / "passwd", ("\n".join(passwd) + "\n").encode(), 0o600, BROKER_USER)
    _write(broker / "mosquitto.conf", render_config(plan).encode(), 0o644)


WRITTEN = ("README.txt", "ca", "broker", "aggregator", "devices")  # what --force replaces


def _prepare(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    present = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if present and not force:
        raise ConfigError(f"--out {out}: exists and is not empty (--force replaces what an "
                          "earlier `fedge provision` wrote there; its keys are then lost)")
    foreign = [name for name in present if name not in WRITTEN]
    if foreign:
        raise ConfigError(f"--out {out}: holds {', '.join(foreign)}, which fedge provision "
                          "did not write; refusing to delete anything there")
    try:
        for name in present:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink()
        out.mkdir(parents=True, exist_ok=True)
        out.chmod(0o755)
    except OSError as e:
        raise ConfigError(f"--out {out}: {e.strerror}") from None


def _certificate(plan: Plan, cn: str, ca_key: Key | None, ca: x509.Certificate | None, *,
                 server: bool = False) -> tuple[Key, x509.Certificate]:
    """A new key and its certificate: self-signed CA when ``ca`` is None, else a leaf."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    is_ca = ca is None
    days = max(plan.days, 3650) if is_ca else plan.days
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(name if ca is None else ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None),
                              critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=not is_ca, key_cert_sign=is_ca, crl_sign=is_ca,
                   content_commitment=False, key_encipherment=False, data_encipherment=False,
                   key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if not is_ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_san(h) for h in plan.hosts]), critical=False)
    return key, builder.sign(ca_key if ca_key is not None else key, hashes.SHA256())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_pair(folder: Path, stem: str, key: Key, cert: x509.Certificate,
                owner: str | None = None) -> None:
    """``{stem}.key`` (0600, PKCS#8) and ``{stem}.pem`` (0644)."""
    _write(folder / f"{stem}.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600, owner)
    _write(folder / f"{stem}.pem", _pem(cert), 0o644)


def _write(path: Path, data: bytes, mode: int, owner: str | None = None) -> None:
    """Creates ``path`` with ``mode`` from the start (a key is never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # the umask may have removed bits
    if owner is not None:
        _give_to_broker(path)


def _give_to_broker(path: Path) -> None:
    """Run as root, Mosquitto drops to user ``mosquitto``: what it reads must be its own."""
    if os.geteuid() != 0:
        return  # the broker will run as whoever runs it (this user)
    try:
        entry = pwd.getpwnam(BROKER_USER)
    except KeyError:
        return  # no such user: Mosquitto then keeps running as root
    os.chown(path, entry.pw_uid, entry.pw_gid)
