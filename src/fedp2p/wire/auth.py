"""Handshake proofs, key derivation and frame MACs, from stdlib ``hmac``/``hashlib`` only.

Keys come from HKDF-SHA256 (RFC 5869, written out here with ``hmac``): the shared secret is the
input key material and the two handshake nonces are the salt, so every connection gets fresh
keys. From that one pseudo-random key we expand a proof per role and a MAC key per direction.

Frames are authenticated with HMAC-SHA256. On the development machine (x86 with SHA
extensions, OpenSSL 3.0) it ran at 1.67 GB/s on 10 MB, against 0.86 GB/s for keyed BLAKE2b,
0.80 GB/s for HMAC-SHA512 and 0.47 GB/s for keyed BLAKE2s; see docs/wire.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

NONCE_SIZE = 32
KEY_SIZE = 32
MAC_SIZE = 32  # HMAC-SHA256 tag, full length
_HASH = "sha256"
_SEQ = struct.Struct("<Q")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """Concentrate the secret's entropy into one pseudo-random key (RFC 5869, section 2.2)."""
    return hmac.digest(salt, ikm, _HASH)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """Stretch the pseudo-random key into independent keys, one per label (RFC 5869, section 2.3)."""
    if not 0 < length <= 255 * hashlib.sha256().digest_size:
        raise ValueError(f"HKDF-Expand cannot produce {length} bytes")
    blocks: list[bytes] = []
    previous = b""
    counter = 1
    while sum(len(b) for b in blocks) < length:
        previous = hmac.digest(prk, previous + info + bytes([counter]), _HASH)
        blocks.append(previous)
        counter += 1
    return b"".join(blocks)[:length]


def new_nonce() -> bytes:
    """Return fresh random bytes from the OS, so no two connections share keys."""
    return os.urandom(NONCE_SIZE)


@dataclass(frozen=True)
class SessionKeys:
    """Everything both ends of one connection derive from the secret and the two nonces."""

    initiator_proof: bytes
    responder_proof: bytes
    initiator_to_responder: bytes
    responder_to_initiator: bytes
    session_id: str

    def __repr__(self) -> str:
        """Keep keys out of logs and tracebacks."""
        return f"SessionKeys(session_id={self.session_id!r})"


def derive_session_keys(
    secret: bytes, initiator_nonce: bytes, responder_nonce: bytes, version: int
) -> SessionKeys:
    """Derive role proofs and per-direction MAC keys bound to both nonces and the version."""
    prk = hkdf_extract(initiator_nonce + responder_nonce, secret)
    label = f"fedp2p/{version} ".encode()
    return SessionKeys(
        initiator_proof=hkdf_expand(prk, label + b"proof initiator", KEY_SIZE),
        responder_proof=hkdf_expand(prk, label + b"proof responder", KEY_SIZE),
        initiator_to_responder=hkdf_expand(prk, label + b"mac initiator->responder", KEY_SIZE),
        responder_to_initiator=hkdf_expand(prk, label + b"mac responder->initiator", KEY_SIZE),
        session_id=hkdf_expand(prk, label + b"session id", 8).hex(),
    )


def frame_mac(key: bytes, seq: int, parts: Iterable[bytes | bytearray | memoryview]) -> bytes:
    """MAC the implicit sequence number and the frame, so altered or replayed frames fail."""
    mac = hmac.new(key, _SEQ.pack(seq), _HASH)
    for part in parts:
        mac.update(part)
    return mac.digest()


def same_digest(expected: bytes, received: bytes | bytearray | memoryview) -> bool:
    """Compare tags in constant time, so timing reveals nothing about the right tag."""
    return hmac.compare_digest(expected, bytes(received))
