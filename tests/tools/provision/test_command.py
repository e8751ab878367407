"""``fedge provision`` (tools/provision/): what it writes, with which permissions, and its errors.

That the broker accepts these files (TLS, mTLS, ACL, password file) is proven against a
real Mosquitto in tests/test_security.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge_client.signing import load_signing_key, load_trusted_keys
from tools import cli


def provision(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["provision", *args])
    return code, capsys.readouterr().err


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def cn(c: x509.Certificate) -> str:
    return str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_certificates_chain_to_the_ca_with_the_right_names_and_uses(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    code, err = provision(capsys, "--out", str(out), "--devices", "3", "--federation",
                          "cardio", "--broker-host", "broker.example", "--broker-host",
                          "10.0.0.7", "--days", "30")
    assert code == 0, err
    ca = cert(out / "ca" / "ca.pem")
    broker = cert(out / "broker" / "broker.pem")
    devices = {d: cert(out / "devices" / d / "device.pem") for d in ("dev-1", "dev-2", "dev-3")}
    leaves = [broker, cert(out / "aggregator" / "aggregator.pem"), *devices.values()]
    for leaf in leaves:
        leaf.verify_directly_issued_by(ca)
        days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
        assert days == 30
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    assert [cn(c) for c in devices.values()] == list(devices)
    assert cn(leaves[1]) == "aggregator"
    eku = {cn(c): c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
           for c in leaves}
    assert list(eku["broker.example"]) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert list(eku["dev-2"]) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for d in devices:  # everything a device needs is in its own folder
        assert (out / "devices" / d / "ca.pem").read_bytes() == (out / "ca" / "ca.pem").read_bytes()


def test_private_keys_are_0600_certificates_0644_and_the_broker_owns_its_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    assert provision(capsys, "--out", str(out), "--device-ids", "ward-a,ward_b")[0] == 0
    for key in ("ca/ca.key", "broker/broker.key", "aggregator/aggregator.key",
                "aggregator/signing.key", "devices/ward-a/device.key"):
        assert mode(out / key) == 0o600, key
    for public in ("ca/ca.pem", "broker/broker.pem", "devices/ward_b/device.pem",
                   "devices/ward_b/signing.pub", "broker/mosquitto.conf", "broker/acl"):
        assert mode(out / public) == 0o644, public
    assert mode(out / "devices" / "ward-a") == 0o700 and mode(out / "ca") == 0o700
    assert mode(out / "broker") == 0o755  # the broker (user mosquitto) must reach its files
    if os.geteuid() == 0:  # Mosquitto started as root drops to `mosquitto` before reading
        owner = pwd.getpwuid((out / "broker" / "broker.key").stat().st_uid).pw_name
        assert owner == "mosquitto"
    signing = load_signing_key(out / "aggregator" / "signing.key")
    assert load_trusted_keys(out / "devices" / "ward-a" / "signing.pub").ids == (signing.key_id,)
    assert signing.key_id in (out / "README.txt").read_text()


def test_config_and_acl_lock_the_topic_tree_per_device(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    args = ["--out", str(out), "--device-ids", "a1,b2", "--federation", "cardio",
            "--prefix", "acme/fl", "--port", "18883", "--bind", "127.0.0.1"]
    assert provision(capsys, *args)[0] == 0
    conf = (out / "broker" / "mosquitto.conf").read_text().splitlines()
    for line in ("listener 18883 127.0.0.1", "require_certificate true",
                 "use_identity_as_username true", "allow_anonymous false",
                 f"acl_file {out / 'broker' / 'acl'}", "max_queued_messages 0",
                 "persistence true", "use_username_as_clientid true"):
        assert line in conf, line
    acl = (out / "broker" / "acl").read_text()
    base = "acme/fl/v3/cardio"
    device_a = acl.split("user a1\n")[1].split("\n\n")[0].splitlines()
    assert sorted(device_a) == sorted([
        f"topic write {base}/update/a1", f"topic write {base}/presence/a1",
        f"topic write {base}/stats/a1", f"topic read {base}/manifest", f"topic read {base}/model/#",
        f"topic read {base}/weights/#", f"topic read {base}/round",
        f"topic read {base}/reply/a1"])
    aggregator = acl.split("user aggregator\n")[1].split("\n\n")[0]
    assert f"topic write {base}/manifest" in aggregator
    assert f"topic read {base}/update/+" in aggregator
    assert f"topic read {base}/stats/+" in aggregator  # for `fedge stats`
    assert acl.count(f"topic write {base}/manifest") == 1  # no device may
    readme = (out / "README.txt").read_text()
    assert f"mosquitto -c {out / 'broker' / 'mosquitto.conf'}" in readme
    assert "--client-id a1" in readme and f"--verify-key {out}/devices/a1/signing.pub" in readme
    assert f"--signing-key {out}/aggregator/signing.key" in readme


@pytest.mark.parametrize(("max_payload", "packet", "flag"), [
    (None, 8 * 2**20 + 128 * 1024, False),  # the aggregator's --max-message-bytes default
    (65536, 65536 + 128 * 1024, True),  # below the parties' 128 KiB chunks: README says so
])
def test_the_broker_passes_payloads_up_to_max_payload(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], max_payload: int | None,
        packet: int, flag: bool) -> None:
    out = tmp_path / "fed"
    sizes = [] if max_payload is None else ["--max-payload", str(max_payload)]
    assert provision(capsys, "--out", str(out), "--devices", "1", *sizes)[0] == 0
    conf = (out / "broker" / "mosquitto.conf").read_text().splitlines()
    assert [line for line in conf if line.startswith("max_packet_size")] == [
        f"max_packet_size {packet}"]
    readme = (out / "README.txt").read_text()
    assert (f"--max-payload {max_payload}" in readme) is flag


def test_password_variant_writes_mosquitto_pbkdf2_hashes_and_no_client_certificates(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    assert provision(capsys, "--out", str(out), "--devices", "2", "--passwords")[0] == 0
    entries = dict(line.split(":", 1)
                   for line in (out / "broker" / "passwd").read_text().splitlines())
    assert sorted(entries) == ["aggregator", "dev-1", "dev-2"]
    for user, folder in (("dev-2", out / "devices" / "dev-2"), ("aggregator",
                                                                 out / "aggregator")):
        password = (folder / "password").read_text().strip()
        assert mode(folder / "password") == 0o600 and len(password) >= 40
        _, seven, iterations, salt, digest = entries[user].split("$")
        assert seven == "7"
        assert base64.b64decode(digest) == hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations))
    assert not list(out.glob("devices/*/device.*")) and mode(out / "broker" / "passwd") == 0o600
    conf = (out / "broker" / "mosquitto.conf").read_text()
    assert f"password_file {out / 'broker' / 'passwd'}" in conf
    assert "require_certificate" not in conf
    assert "--password-file" in (out / "README.txt").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--device-ids", "ok,bad/id"], "device id 'bad/id': use 1-64 letters"),
    (["--device-ids", "dev.1"], "device id 'dev.1'"),
    (["--device-ids", "a,a"], "must be unique"),
    (["--device-ids", "aggregator"], "differ from --aggregator-name"),
    (["--devices", "0"], "--devices: expected at least 1"),
    (["--devices", "1", "--federation", "a+b"], "--federation/--prefix"),
    (["--devices", "1", "--port", "70000"], "--port 70000"),
    (["--devices", "1", "--max-payload", "1000"], "--max-payload 1000: must be in [1024, "),
    (["--devices", "1", "--max-payload", str(2**24)], f"--max-payload {2**24}: must be in"),
])
def test_bad_flags_are_refused_with_the_reason_and_nothing_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        message: str) -> None:
    code, err = provision(capsys, "--out", str(tmp_path / "fed"), *args)
    assert code == 2 and message in err, err
    assert not (tmp_path / "fed").exists()


def test_a_non_empty_directory_needs_force_and_force_makes_new_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    assert provision(capsys, "--out", str(out), "--devices", "1")[0] == 0
    first = (out / "ca" / "ca.key").read_bytes()
    code, err = provision(capsys, "--out", str(out), "--devices", "1")
    assert code == 2 and "exists and is not empty" in err and "--force" in err
    assert (out / "ca" / "ca.key").read_bytes() == first
    assert provision(capsys, "--out", str(out), "--devices", "1", "--force")[0] == 0
    assert (out / "ca" / "ca.key").read_bytes() != first
    (out / "notes.txt").write_text("mine")
    code, err = provision(capsys, "--out", str(out), "--devices", "1", "--force")
    assert code == 2 and "holds notes.txt" in err and (out / "ca" / "ca.key").exists()
