"""Signed manifests, rounds and replies: what a device accepts, what it refuses, and the key
files it reads."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from edge_client.errors import ConfigError
from edge_client.protocol import Hyperparameters, Manifest, Reply, Round, SignedMessage
from edge_client.signing import (
    SignatureRejected,
    SigningKey,
    TrustedKeys,
    load_signing_key,
    load_trusted_keys,
)

KEY = SigningKey.generate()
MANIFEST = Manifest(federation="cardio", model_sha256="a" * 64, model_size=1234,
                    weights_version=3, weights_sha256="b" * 64, round_id=4, codec="fp32",
                    key_id="aggregator")


def test_a_signed_manifest_verifies_and_survives_the_wire() -> None:
    signed = KEY.sign(MANIFEST)
    assert signed.key_id == KEY.key_id and signed.signature is not None
    assert len(signed.signature) == 64
    TrustedKeys.of(KEY.private.public_key()).verify(Manifest.decode(signed.encode()))


def test_key_id_is_the_start_of_the_public_keys_sha256() -> None:
    raw = KEY.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
    assert KEY.key_id == hashlib.sha256(raw).hexdigest()[:16]


CHANGES: dict[str, Any] = {
    "model_sha256": "c" * 64, "weights_sha256": "d" * 64, "weights_version": 4,
    "model_size": 1235, "round_id": 5, "federation": "other", "codec": "fp16",
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_changing_any_field_after_signing_breaks_the_signature(field: str) -> None:
    forged = dataclasses.replace(KEY.sign(MANIFEST), **{field: CHANGES[field]})
    with pytest.raises(SignatureRejected, match="does not verify"):
        TrustedKeys.of(KEY.private.public_key()).verify(forged)


@given(st.integers(0, 63), st.integers(1, 255))
def test_a_flipped_signature_bit_is_refused(position: int, mask: int) -> None:
    signed = KEY.sign(MANIFEST)
    assert signed.signature is not None
    sig = bytearray(signed.signature)
    sig[position] ^= mask
    with pytest.raises(SignatureRejected, match="does not verify"):
        TrustedKeys.of(KEY.private.public_key()).verify(
            dataclasses.replace(signed, signature=bytes(sig)))


ROUND = Round(federation="cardio", round_id=4, weights_version=3, model_sha256="a" * 64,
              deadline=1e9, hyperparameters=Hyperparameters(1, 8, 0.1), codec="int8",
              selected=("dev-1", "dev-2"))
REPLY = Reply(federation="cardio", round_id=4, client_id="dev-1", nonce=b"n" * 16,
              accepted=False, reason="late: round 4 closed")
TAMPERED: list[tuple[SignedMessage, dict[str, Any]]] = [
    (ROUND, {"hyperparameters": Hyperparameters(10_000, 8, 999.0)}),
    (ROUND, {"deadline": 2e9}), (ROUND, {"selected": ("dev-9",)}), (ROUND, {"round_id": 5}),
    (ROUND, {"run_id": "0123456789abcdef"}),
    (REPLY, {"accepted": True, "reason": ""}), (REPLY, {"nonce": b"m" * 16}),
    (REPLY, {"client_id": "dev-2"}),
]


@pytest.mark.parametrize(("message", "change"), TAMPERED,
                         ids=[f"{m.KIND}-{next(iter(c))}" for m, c in TAMPERED])
def test_rounds_and_replies_are_signed_like_the_manifest(
        message: SignedMessage, change: dict[str, Any]) -> None:
    trusted = TrustedKeys.of(KEY.private.public_key())
    signed = KEY.sign(message)
    trusted.verify(type(message).decode(signed.encode()))
    with pytest.raises(SignatureRejected, match=f"{message.KIND} signature does not verify"):
        trusted.verify(dataclasses.replace(signed, **change))  # type: ignore[type-var]
    with pytest.raises(SignatureRejected, match=f"{message.KIND} is not signed"):
        trusted.verify(message)


def test_a_signature_does_not_carry_over_to_another_kind_of_message() -> None:
    """A reply's signature pasted onto a round (both from the same key) does not verify."""
    reply = KEY.sign(REPLY)
    pasted = dataclasses.replace(ROUND, key_id=reply.key_id, signature=reply.signature)
    with pytest.raises(SignatureRejected, match="round signature does not verify"):
        TrustedKeys.of(KEY.private.public_key()).verify(pasted)


def test_unsigned_unknown_key_and_another_key_under_our_id_are_refused() -> None:
    trusted = TrustedKeys.of(KEY.private.public_key())
    with pytest.raises(SignatureRejected, match="not signed"):
        trusted.verify(MANIFEST)
    other = SigningKey.generate()
    with pytest.raises(SignatureRejected, match=f"unknown key id '{other.key_id}'"):
        trusted.verify(other.sign(MANIFEST))
    impostor = dataclasses.replace(other.sign(MANIFEST), key_id=KEY.key_id)
    with pytest.raises(SignatureRejected, match="does not verify"):
        trusted.verify(impostor)


def test_key_files_round_trip_and_a_rotation_file_trusts_both(tmp_path: Path) -> None:
    new = SigningKey.generate()
    (tmp_path / "signing.key").write_bytes(new.private_pem())
    (tmp_path / "both.pub").write_bytes(KEY.public_pem() + new.public_pem())
    loaded = load_signing_key(tmp_path / "signing.key")
    trusted = load_trusted_keys(tmp_path / "both.pub")
    assert loaded.key_id == new.key_id
    assert trusted.ids == tuple(sorted((KEY.key_id, new.key_id)))
    for key in (KEY, loaded):
        trusted.verify(key.sign(MANIFEST))


def test_unusable_key_files_are_clear_config_errors(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "ec.pub").write_bytes(ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "junk").write_text("hello\n")
    with pytest.raises(ConfigError, match=r"--signing-key .*ec.key: expected an Ed25519 key"):
        load_signing_key(tmp_path / "ec.key")
    with pytest.raises(ConfigError, match=r"--signing-key .*junk: not an unencrypted PEM"):
        load_signing_key(tmp_path / "junk")
    with pytest.raises(ConfigError, match=r"--verify-key .*ec.pub: key 1 is .*expected an "
                                          r"Ed25519 public key"):
        load_trusted_keys(tmp_path / "ec.pub")
    with pytest.raises(ConfigError, match=r"--verify-key .*junk: no PEM public key"):
        load_trusted_keys(tmp_path / "junk")
    with pytest.raises(ConfigError, match=r"--verify-key .*missing: No such file"):
        load_trusted_keys(tmp_path / "missing")
