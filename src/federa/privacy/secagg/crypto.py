"""The cryptographic primitives of SecAgg+, all from the `cryptography` package.

- Key agreement: X25519 (RFC 7748), the shared secret stretched by HKDF-SHA256
  (RFC 5869) with a label per purpose, so the encryption key and the mask seed of a pair
  of clients never coincide.
- Authenticated encryption of shares: AES-256-GCM with a random 96-bit nonce; the
  sender, the recipient and the round are bound as associated data.
- Mask expansion: AES-256-CTR keyed by a 32-byte seed, its key stream read as
  little-endian uint32 (a PRG: without the seed, the stream is indistinguishable from
  uniform). Each seed keys one stream, so the counter starts at 0. `KeyStream` reads
  it a slice at a time into one reused buffer (cryptography's `update_into` on zeros),
  which is how masks are added without ever holding a whole mask in memory.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from federa.errors import FederaError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
ENCRYPTION_LABEL = b"federa/secagg+/v1/encryption"
MASK_LABEL = b"federa/secagg+/v1/mask"
U32 = npt.NDArray[np.uint32]


class TamperedError(FederaError):
    """A ciphertext or share failed its integrity check."""


def generate_keypair() -> tuple[bytes, bytes]:
    """Return a fresh X25519 (private key, public key), 32 raw bytes each."""
    key = X25519PrivateKey.generate()
    return _private_bytes(key), public_key_of(_private_bytes(key))


def _private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def public_key_of(private_key: bytes) -> bytes:
    """Return the raw X25519 public key of a raw private key."""
    key = X25519PrivateKey.from_private_bytes(private_key).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


PrivateKey = X25519PrivateKey


def private_key(raw: bytes) -> PrivateKey:
    """Return the X25519 private key object of 32 raw bytes (load once, agree many times)."""
    return X25519PrivateKey.from_private_bytes(raw)


def agree(private: bytes | PrivateKey, peer_public_key: bytes, label: bytes) -> bytes:
    """Return a 32-byte key shared with the owner of `peer_public_key`, for one purpose.

    Raises:
        TamperedError: the peer's key is not a valid X25519 public key (the all-zero
            shared secret of a low-order point is refused).
    """
    key = private_key(private) if isinstance(private, bytes) else private
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(peer_public_key))
    except ValueError as exc:
        raise TamperedError(f"invalid X25519 public key: {exc}") from None
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label).derive(shared)


def random_seed() -> bytes:
    """Return 32 bytes from the operating system's cryptographic generator."""
    return os.urandom(KEY_BYTES)


def commitment(secret: bytes) -> bytes:
    """Return SHA-256 of `secret`: lets the server check a reconstruction (hiding for 32
    random bytes)."""
    return hashlib.sha256(b"federa/secagg+/v1/commit" + secret).digest()


def associated_data(round_num: int, sender: int, recipient: int) -> bytes:
    """Return the associated data binding a ciphertext to its round and both parties."""
    return b"federa/secagg+/v1" + struct.pack("<qqq", round_num, sender, recipient)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Return nonce || AES-256-GCM(plaintext) || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Return the plaintext of `encrypt`'s output.

    Raises:
        TamperedError: the ciphertext, its nonce, tag or associated data were altered,
            or it was encrypted under another key.
    """
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise TamperedError(f"a ciphertext of {len(blob)} bytes is too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise TamperedError("authentication failed (AES-GCM tag mismatch)") from None


MASK_CHUNK = 1 << 15
"""Elements per slice of a mask: the running total and the key stream stay in L2 cache."""


def _stream(seed: bytes) -> Any:
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a mask seed is {KEY_BYTES} bytes, got {len(seed)}")
    return Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()


def expand_mask(seed: bytes, length: int) -> U32:
    """Return the mask of `seed`: `length` uint32 from its AES-256-CTR key stream."""
    out = bytearray(4 * length + 15)  # update_into needs room for one block beyond
    _stream(seed).update_into(bytes(4 * length), out)
    return np.frombuffer(out, dtype="<u4", count=length).astype(np.uint32)


class KeyStream:
    """The AES-256-CTR key stream of a 32-byte seed, read as uint32 one slice at a time.

    The slices are written by AES-CTR straight into one reused buffer (encrypting a
    buffer of zeros yields the key stream), so reading n elements costs one cipher
    call and no allocation. Successive reads continue the stream: the elements equal
    `expand_mask(seed, total length)` read in order.

    Args:
        seed: The 32-byte AES key.
        chunk: The most elements one `read` returns.
    """

    def __init__(self, seed: bytes, chunk: int = 0) -> None:
        self._cipher = _stream(seed)
        self._chunk = max(1, chunk or MASK_CHUNK)
        self._zeros = bytes(4 * self._chunk)
        self._buffer = bytearray(4 * self._chunk + 15)  # update_into wants a block spare
        self._view: U32 = np.frombuffer(self._buffer, dtype="<u4", count=self._chunk)

    def read(self, size: int) -> U32:
        """Return the next `size` (<= chunk) elements; valid until the next read."""
        if not 0 <= size <= self._chunk:
            raise ValueError(f"read at most {self._chunk} elements, got {size}")
        stream_in = self._zeros if size == self._chunk else self._zeros[: 4 * size]
        self._cipher.update_into(stream_in, self._buffer)
        return self._view if size == self._chunk else self._view[:size]


def apply_masks(total: U32, masks: Sequence[tuple[bytes, int]]) -> None:
    """Add each (seed, sign) mask to `total` in place, mod 2^32: sign 1 adds, -1 subtracts.

    Equal to adding `expand_mask(seed, len(total))` for each seed, but slice by slice:
    one pass over `total` instead of one per mask, every stream's slice written by
    AES-CTR into the same small buffer (it stays in cache, however many masks) and
    added from there in uint32 wraparound arithmetic (no wider temporaries, no copies).
    """
    streams = [(_stream(seed), sign >= 0) for seed, sign in masks]
    chunk = min(MASK_CHUNK, len(total))
    zeros = bytes(4 * chunk)
    buffer = bytearray(4 * chunk + 15)  # update_into wants a block spare
    view: U32 = np.frombuffer(buffer, dtype="<u4", count=chunk)
    for start in range(0, len(total), chunk):
        size = min(chunk, len(total) - start)
        part = total[start : start + size]
        stream_in, key = (zeros, view) if size == chunk else (zeros[: 4 * size], view[:size])
        for stream, adds in streams:
            stream.update_into(stream_in, buffer)
            (np.add if adds else np.subtract)(part, key, out=part)
