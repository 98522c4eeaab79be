"""What the SecAgg+ stages carry: config keys, array names, sizes and reply checks.

Every stage is one round trip of training tasks marked with `PROTOCOL_KEY` (its value
names the stage), so it travels over any transport, in-process or gRPC, like any other
task. Keys, ids and ciphertexts travel as uint8 / int64 arrays, masked inputs as uint32.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.core.arrays import Arrays
from federa.core.messages import PROTOCOL_KEY, Config
from federa.errors import FederaError
from federa.privacy.secagg import crypto, shamir

PROTOCOL = "secagg+"
SETUP, SHARE, MASK, UNMASK = "setup", "share", "mask", "unmask"
STAGES = (SETUP, SHARE, MASK, UNMASK)
PREFIX = "secagg."

# Config keys (server -> client).
CLIENT_ID = "secagg.client_id"
NUM_CLIENTS = "secagg.num_clients"
CLIP = "secagg.clip"
MAX_WEIGHT = "secagg.max_weight"
METRIC_CLIP = "secagg.metric_clip"
THRESHOLD = "secagg.threshold"
METRIC_NAMES = "secagg.metric_names"

# Array names.
PUBLIC_KEYS = "secagg.public_keys"  # setup reply: (2, 32) [c, s]; share task: (k, 2, 32)
COMMITMENT = "secagg.commitment"  # setup reply: (32,) hash of the self-mask seed
NAMES = "secagg.metric_names"  # setup reply: UTF-8 JSON list of metric names
NEIGHBOURS = "secagg.neighbours"  # share task: (k,) int64
RECIPIENTS = "secagg.recipients"  # share reply: (k,) int64
CIPHERTEXTS = "secagg.ciphertexts"  # share reply / mask task: (m, CIPHERTEXT_BYTES)
SENDERS = "secagg.senders"  # mask task: (m,) int64
MASKED = "secagg.masked"  # mask reply: (L,) uint32
SURVIVORS = "secagg.survivors"  # unmask task: owners of the self-mask shares wanted
DROPPED = "secagg.dropped"  # unmask task: owners of the mask-key shares wanted
SEED_OWNERS = "secagg.seed_owners"  # unmask reply
SEED_SHARES = "secagg.seed_shares"  # unmask reply: (a, SHARE_BYTES)
KEY_OWNERS = "secagg.key_owners"  # unmask reply
KEY_SHARES = "secagg.key_shares"  # unmask reply: (d, SHARE_BYTES)

SECRET_BYTES = crypto.KEY_BYTES
SHARE_BYTES = shamir.share_bytes(SECRET_BYTES)
_HEADER = struct.Struct("<qq")  # sender, recipient
PLAINTEXT_BYTES = _HEADER.size + 2 * SHARE_BYTES
CIPHERTEXT_BYTES = crypto.NONCE_BYTES + PLAINTEXT_BYTES + crypto.TAG_BYTES


class MalformedError(FederaError):
    """A stage message lacks an array or has one of the wrong dtype or shape."""


def stage_config(stage: str) -> dict[str, Any]:
    """Return the config entry that marks a task as `stage` of SecAgg+."""
    return {PROTOCOL_KEY: f"{PROTOCOL}/{stage}"}


def stage_of(config: Config) -> str | None:
    """Return the SecAgg+ stage a task's config asks for, or None for an ordinary task."""
    value = config.get(PROTOCOL_KEY)
    if not isinstance(value, str) or not value.startswith(PROTOCOL + "/"):
        return None
    stage = value.removeprefix(PROTOCOL + "/")
    if stage not in STAGES:
        raise MalformedError(f"unknown SecAgg+ stage {stage!r}")
    return stage


def strip_config(config: Config) -> dict[str, Any]:
    """Return `config` without the protocol's own keys (what the wrapped client sees)."""
    return {k: v for k, v in config.items() if k != PROTOCOL_KEY and not k.startswith(PREFIX)}


def field(
    arrays: Mapping[str, npt.NDArray[Any]],
    name: str,
    dtype: npt.DTypeLike,
    shape: Sequence[int | None],
) -> npt.NDArray[Any]:
    """Return `arrays[name]` after checking its dtype and shape (None matches any size).

    Raises:
        MalformedError: the array is missing or of another dtype or shape.
    """
    if name not in arrays:
        raise MalformedError(f"the message has no {name!r} array")
    value = arrays[name]
    want = np.dtype(dtype)
    ok = value.dtype == want and value.ndim == len(shape)
    ok = ok and all(s is None or s == d for s, d in zip(shape, value.shape, strict=False))
    if not ok:
        wanted = "x".join("*" if s is None else str(s) for s in shape)
        raise MalformedError(
            f"{name!r} is {value.dtype}{list(value.shape)}, expected {want}[{wanted}]"
        )
    return value


def ids(values: Sequence[int]) -> npt.NDArray[np.int64]:
    """Return client ids as an int64 array."""
    return np.asarray(list(values), dtype=np.int64).reshape(-1)


def id_list(array: npt.NDArray[Any]) -> list[int]:
    """Return distinct client ids from an int64 array; raise MalformedError on repeats."""
    out = [int(v) for v in array]
    if len(set(out)) != len(out):
        raise MalformedError("a list of client ids holds one id twice")
    return out


def encode_names(names: Sequence[str]) -> npt.NDArray[np.uint8]:
    """Return metric names as a UTF-8 JSON byte array."""
    data = json.dumps(sorted(names)).encode()
    return np.array(bytearray(data), dtype=np.uint8)


def decode_names(data: npt.NDArray[Any] | str) -> list[str]:
    """Return the metric names `encode_names` (or a JSON config string) holds."""
    try:
        text = data if isinstance(data, str) else bytes(np.asarray(data, np.uint8)).decode()
        names = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedError(f"metric names are not a JSON list: {exc}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise MalformedError("metric names must be a JSON list of non-empty strings")
    if len(set(names)) != len(names):
        raise MalformedError("metric names repeat")
    return sorted(names)


def pack_shares(sender: int, recipient: int, seed_share: bytes, key_share: bytes) -> bytes:
    """Return the plaintext of one encrypted share message."""
    return _HEADER.pack(sender, recipient) + seed_share + key_share


def unpack_shares(plaintext: bytes, sender: int, recipient: int) -> tuple[bytes, bytes]:
    """Return (self-mask seed share, mask key share) after checking the header.

    Raises:
        MalformedError: the plaintext has the wrong size or names other parties.
    """
    if len(plaintext) != PLAINTEXT_BYTES:
        raise MalformedError(f"a share message is {len(plaintext)} bytes, not {PLAINTEXT_BYTES}")
    if _HEADER.unpack_from(plaintext) != (sender, recipient):
        raise MalformedError(f"a share message names other parties than {sender} -> {recipient}")
    body = plaintext[_HEADER.size :]
    return body[:SHARE_BYTES], body[SHARE_BYTES:]


def as_arrays(values: Mapping[str, npt.ArrayLike]) -> Arrays:
    """Return a reply as `Arrays` (keeps the key order)."""
    return Arrays({k: np.asarray(v) for k, v in values.items()})
