"""The server's last step: recover the secrets it is owed, strip the masks, decode the sum.

Every recovered secret is checked before use: a mask private key against the public
key its owner advertised, a self-mask seed against the commitment its owner sent. A
share that was altered on its way (or by its holder) makes the check fail; the server
then looks for `threshold` shares that pass it and names the holders whose shares
disagree with the secret they give. If none pass, the round fails.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.core.arrays import Arrays
from federa.core.messages import Metrics
from federa.errors import AggregationError
from federa.privacy.secagg import crypto, quantize, shamir, wire

logger = logging.getLogger(__name__)

MAX_SUBSETS = 256
"""Subsets of shares tried to get around tampered shares, per secret."""


def recover_secret(
    shares: Sequence[tuple[int, bytes]],
    threshold: int,
    is_genuine: Callable[[bytes], bool],
    what: str,
) -> tuple[bytes, list[int]]:
    """Return a secret from its shares and the holders whose shares disagree with it.

    Args:
        shares: (holder id, share) pairs, at least `threshold` of them.
        threshold: Shares that determine the secret.
        is_genuine: Checks a candidate secret (against a public key or commitment).
        what: Names the secret in errors ("client 3's self-mask seed").

    Raises:
        AggregationError: no `threshold` shares (among the first MAX_SUBSETS subsets
            tried) give a secret that passes `is_genuine`.
    """
    ordered = sorted(shares)
    for subset in itertools.islice(itertools.combinations(ordered, threshold), MAX_SUBSETS):
        chosen = {holder for holder, _ in subset}
        others = [(holder, share) for holder, share in ordered if holder not in chosen]
        try:
            # The secret and every other holder's share, predicted from this subset.
            values = shamir.evaluate(subset, [None, *(holder for holder, _ in others)])
            secret = shamir.secret_of(values[0], wire.SECRET_BYTES)
        except ValueError:
            continue
        if not is_genuine(secret):
            continue
        bad = [
            holder
            for (holder, share), predicted in zip(others, values[1:], strict=True)
            if predicted != _elements_or_none(share)
        ]
        return secret, bad
    raise AggregationError(
        f"the {len(ordered)} shares of {what} do not reconstruct it (they were tampered "
        "with); the round is abandoned"
    )


def _elements_or_none(share: bytes) -> list[int] | None:
    try:
        return shamir.elements(share)
    except ValueError:
        return None


def is_private_key_of(public_key: bytes) -> Callable[[bytes], bool]:
    """Return a check that a secret is the X25519 private key of `public_key`."""

    def check(secret: bytes) -> bool:
        return crypto.public_key_of(secret) == public_key

    return check


def opens(commitment: bytes) -> Callable[[bytes], bool]:
    """Return a check that a secret opens `commitment`."""

    def check(secret: bytes) -> bool:
        return crypto.commitment(secret) == commitment

    return check


@dataclass(frozen=True, slots=True, kw_only=True)
class Masks:
    """What is needed to strip the masks from the sum of the survivors' inputs.

    Attributes:
        seeds: Self-mask seed b_u of every survivor u.
        dropped_keys: Mask private key s_v of every dropped client v that survivors
            masked with.
        public_keys: Mask public key s_u of every survivor.
        graph: The neighbour graph.
    """

    seeds: Mapping[int, bytes]
    dropped_keys: Mapping[int, bytes]
    public_keys: Mapping[int, bytes]
    graph: Mapping[int, Sequence[int]]


def unmasked_sum(masked: Mapping[int, npt.NDArray[np.uint32]], keys: Masks) -> npt.NDArray[Any]:
    """Return the sum mod 2^32 of the survivors' inputs without any mask."""
    survivors = sorted(masked)
    length = len(masked[survivors[0]])
    total = np.zeros(length, dtype=quantize.RING_DTYPE)
    for u in survivors:  # whole arrays: faster than slice by slice across 100s of them
        np.add(total, masked[u], out=total)
    masks = [(keys.seeds[u], -1) for u in survivors]
    alive = set(survivors)
    for v, raw in sorted(keys.dropped_keys.items()):
        private_key = crypto.private_key(raw)
        for u in sorted(alive.intersection(keys.graph[v])):
            pair_seed = crypto.agree(private_key, keys.public_keys[u], crypto.MASK_LABEL)
            # u added +PRG when u < v and -PRG otherwise; undo it.
            masks.append((pair_seed, -1 if u < v else 1))
    crypto.apply_masks(total, masks)
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class Encoding:
    """How the inputs were encoded (see `participant.setup`)."""

    reference: Arrays
    clip: float
    levels: int
    max_weight: float
    metric_clip: float
    metric_names: Sequence[str]


def decode(
    total: npt.NDArray[np.uint32], count: int, enc: Encoding
) -> tuple[Arrays, int, Metrics] | None:
    """Return (mean arrays, total examples, mean metrics) of `count` inputs, or None.

    None means every input had weight 0 (no examples): there is nothing to average.
    """
    size = enc.reference.num_params
    if not total[size : size + 2].any():
        return None
    weight = quantize.decode_wide_sum(total[size : size + 2], 0.0, 1.0, enc.levels, count)
    update = quantize.decode_sum(total[:size], -enc.clip, enc.clip, enc.levels, count) / weight
    out: dict[str, npt.NDArray[Any]] = {}
    start = 0
    for name, ref in enc.reference.items():
        piece = ref.astype(np.float64) + update[start : start + ref.size].reshape(ref.shape)
        start += ref.size
        out[name] = (np.rint(piece) if ref.dtype.kind in "iub" else piece).astype(ref.dtype)
    metrics: dict[str, float] = {}
    for i, name in enumerate(enc.metric_names):
        at = size + 2 + 4 * i
        if not total[at + 2 : at + 4].any():
            continue  # no client with examples reported it
        clip = enc.metric_clip
        value = quantize.decode_wide_sum(total[at : at + 2], -clip, clip, enc.levels, count)
        present = quantize.decode_wide_sum(total[at + 2 : at + 4], 0.0, 1.0, enc.levels, count)
        metrics[name] = value / present
    num_examples = max(1, round(weight * enc.max_weight))
    return Arrays(out), num_examples, metrics
