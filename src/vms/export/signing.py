"""The export signing key: Ed25519, its 32-byte seed in ``<data_dir>/export-signing.key``
(0600, made at the server's first start, see :mod:`vms.keyfile`).

Anyone may hold the public key: ``GET /api/v1/exports/public-key`` gives it raw (base64) and
as PEM, with its id, the SHA-256 of the raw key, which every manifest names. A manifest is
checked with :func:`verify` or, without this software, ``openssl pkeyutl -verify -pubin
-inkey key.pem -rawin -in manifest.json -sigfile manifest.sig``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vms.errors import Kind, VmsError
from vms.keyfile import KeyFile

KEY_FILE = "export-signing.key"
ALGORITHM = "Ed25519"
SIGNATURE_BYTES = 64
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def key_file(data_dir: Path) -> KeyFile:
    return KeyFile(Path(data_dir) / KEY_FILE, 32, "export signing key")


def raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(*_RAW)


def key_id(public: Ed25519PublicKey) -> str:
    """The SHA-256 of the raw public key, in hex: how a manifest names the key that signed it."""
    return hashlib.sha256(raw(public)).hexdigest()


def pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class Signer:
    """The server's signing key, loaded (or made, ``create``) once."""

    def __init__(self, data_dir: Path, *, create: bool = True) -> None:
        seed = key_file(data_dir).load(create=create)
        if seed is None:
            raise VmsError(
                Kind.NOT_FOUND,
                f"no export signing key in {data_dir} (the server makes it at its first start)",
            )
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self._key.public_key()
        self.key_id = key_id(self.public)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def verify(public: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def load_public(text: bytes) -> Ed25519PublicKey:
    """A public key given as PEM, as its 32 raw bytes, or as those bytes in base64."""
    try:
        if len(text) == 32:
            return Ed25519PublicKey.from_public_bytes(text)
        text = text.strip()
        if text.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(text)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 key")
            return key
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise VmsError(
            Kind.INVALID_ARGUMENT,
            "not an Ed25519 public key (PEM, 32 raw bytes, or those in base64)",
        ) from None
