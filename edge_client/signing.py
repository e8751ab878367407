"""Ed25519 signatures over manifests: the global model and weights come from the aggregator.

The aggregator signs :meth:`Manifest.signed_bytes` (the canonical encoding with
``signature = null``); the manifest names the SHA-256 of the model file and of the
global weights, so one signature covers both. A device trusts one or more public
keys (several during a key rotation) and refuses a manifest that is unsigned, names
a key id it does not know, or whose signature does not verify.

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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_client.errors import ConfigError, ValidationError
from edge_client.protocol import Manifest

_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)


class ManifestRejected(ValidationError):
    """A manifest whose signature is missing, made by an unknown key, or wrong."""


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
        """The id manifests signed with this key carry."""
        return key_id(self.private.public_key())

    def sign(self, manifest: Manifest) -> Manifest:
        """``manifest`` with this key's id and an Ed25519 signature over its signed bytes."""
        unsigned = dataclasses.replace(manifest, key_id=self.key_id, signature=None)
        return dataclasses.replace(unsigned, signature=self.private.sign(unsigned.signed_bytes()))

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
    """The public keys a device accepts manifests from, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, *public: Ed25519PublicKey) -> TrustedKeys:
        """Trust exactly ``public``."""
        return cls({key_id(p): p for p in public})

    @property
    def ids(self) -> tuple[str, ...]:
        """The trusted key ids, sorted."""
        return tuple(sorted(self.keys))

    def verify(self, manifest: Manifest) -> None:
        """Checks that a trusted key signed ``manifest``.

        Raises:
            ManifestRejected: unsigned, signed by an unknown key id, or a bad signature.
        """
        if manifest.signature is None:
            raise ManifestRejected("manifest is not signed")
        public = self.keys.get(manifest.key_id)
        if public is None:
            raise ManifestRejected(f"manifest is signed by unknown key id {manifest.key_id!r} "
                                   f"(trusted: {', '.join(self.ids)})")
        try:
            public.verify(manifest.signature, manifest.signed_bytes())
        except InvalidSignature:
            raise ManifestRejected(f"manifest signature does not verify with key id "
                                   f"{manifest.key_id} (altered, or signed by another key)"
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
