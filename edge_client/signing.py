"""Ed25519 signatures over what the aggregator publishes and a device acts on.

The aggregator signs the manifest, the round announcement and each reply
(:class:`~edge_client.protocol.SignedMessage`: the signature covers
:meth:`~edge_client.protocol.SignedMessage.signed_bytes`, the canonical encoding with
``signature = null``). The manifest names the SHA-256 of the model file and of the
global weights, so its signature covers both; the round's covers its hyperparameters,
deadline and selection; a reply's its verdict on one update (by nonce). A device
trusts one or more public keys (several during a key rotation) and refuses a message
that is unsigned, names a key id it does not know, or whose signature does not verify.

A key id is the first 16 hex digits of the SHA-256 of the raw 32-byte public key.
Keys are PEM files: PKCS#8 for the private key, SubjectPublicKeyInfo for public
keys (``openssl genpkey -algorithm ed25519`` writes the same formats). Pure
functions and small frozen classes; the only I/O is reading key files.

This module needs ``cryptography``; the edge client imports it only when
``--verify-key`` is given, so a device that does not verify need not install it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_client.errors import ConfigError, ValidationError
from edge_client.protocol import SignedMessage

_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
S = TypeVar("S", bound=SignedMessage)


class SignatureRejected(ValidationError):
    """A signed message whose signature is missing, made by an unknown key, or wrong."""


def key_id(public: Ed25519PublicKey) -> str:
    """The key id of ``public``: first 16 hex digits of SHA-256 of its raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """The aggregator's private key and its key id."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        """The id messages signed with this key carry."""
        return key_id(self.private.public_key())

    def sign(self, message: S) -> S:
        """``message`` with this key's id and an Ed25519 signature over its signed bytes."""
        unsigned = dataclasses.replace(message, key_id=self.key_id,  # type: ignore[type-var]
                                       signature=None)
        return dataclasses.replace(unsigned,  # type: ignore[type-var]
                                   signature=self.private.sign(unsigned.signed_bytes()))

    def private_pem(self) -> bytes:
        """The private key, PKCS#8 PEM, unencrypted (protect the file: mode 0600)."""
        return self.private.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def public_pem(self) -> bytes:
        """The public key, SubjectPublicKeyInfo PEM: what devices are given."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a device accepts signed messages from, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, *public: Ed25519PublicKey) -> TrustedKeys:
        """Trust exactly ``public``."""
        return cls({key_id(p): p for p in public})

    @property
    def ids(self) -> tuple[str, ...]:
        """The trusted key ids, sorted."""
        return tuple(sorted(self.keys))

    def verify(self, message: SignedMessage) -> None:
        """Checks that a trusted key signed ``message`` (a manifest, round or reply).

        Raises:
            SignatureRejected: unsigned, signed by an unknown key id, or a bad signature;
                the message names the kind.
        """
        kind = message.KIND
        if message.signature is None:
            raise SignatureRejected(f"{kind} is not signed")
        public = self.keys.get(message.key_id)
        if public is None:
            raise SignatureRejected(f"{kind} is signed by unknown key id {message.key_id!r} "
                                    f"(trusted: {', '.join(self.ids)})")
        try:
            public.verify(message.signature, message.signed_bytes())
        except InvalidSignature:
            raise SignatureRejected(f"{kind} signature does not verify with key id "
                                    f"{message.key_id} (altered, or signed by another key)"
                                    ) from None


def load_signing_key(path: Path, what: str = "--signing-key") -> SigningKey:
    """Reads an unencrypted Ed25519 private key (PKCS#8 PEM).

    Raises:
        ConfigError: unreadable, not PEM, encrypted, or not Ed25519; names ``what`` and path.
    """
    data = _read(path, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what} {path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} {path}: expected an Ed25519 key, got {type(key).__name__}")
    return SigningKey(key)


def load_trusted_keys(path: Path, what: str = "--verify-key") -> TrustedKeys:
    """Reads one or more Ed25519 public keys (PEM blocks, concatenated) from ``path``.

    Raises:
        ConfigError: unreadable, no PEM public key in it, or a key that is not Ed25519.
    """
    blocks = _PEM_PUBLIC.findall(_read(path, what))
    if not blocks:
        raise ConfigError(f"{what} {path}: no PEM public key (-----BEGIN PUBLIC KEY-----) in it")
    keys = []
    for i, block in enumerate(blocks, 1):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError as e:
            raise ConfigError(f"{what} {path}: key {i} does not load ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{what} {path}: key {i} is {type(key).__name__}, "
                              "expected an Ed25519 public key")
        keys.append(key)
    return TrustedKeys.of(*keys)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None
