"""The client's side of SecAgg+: one function per stage, over an explicit state.

Bonawitz et al. "Practical Secure Aggregation for Privacy-Preserving Machine Learning."
CCS 2017, with the neighbour graph of Bell et al. CCS 2020. Client u:

1. setup: trains, encodes its weighted, clipped update x_u in the ring, draws two X25519
   key pairs (c_u for encryption, s_u for masks) and a self-mask seed b_u, and sends the
   public keys and a commitment to b_u.
2. share: splits b_u and s_u's private key into Shamir shares for its neighbours and
   encrypts each neighbour's pair of shares with AES-GCM under HKDF(X25519(c_u, c_v)).
3. mask: decrypts the shares its neighbours sent it, and sends
   y_u = x_u + PRG(b_u) + sum_v +-PRG(HKDF(X25519(s_u, s_v))) mod 2^32 (+ if u < v).
4. unmask: for the neighbours the server lists, sends its share of b_v (v survived) or
   of s_v (v dropped), never both for one client, and answers one unmask per round.

The state lives in `Arrays` under the "secagg." prefix so that simulation, which
rebuilds a client for every task, can keep it between stages like any client state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.core.arrays import Arrays
from federa.core.messages import Config, TrainResult, validate_metrics
from federa.errors import FederaError
from federa.privacy.secagg import crypto, quantize, shamir, wire
from federa.privacy.secagg.wire import MalformedError

_STATE = "secagg.state"  # int64: round_num, stage done (index into STAGES), client id
_KEYS = "secagg.keys"  # uint8 (3, 32): c private, s private, b
_INPUT = "secagg.input"  # uint32: encoded update and weight
_SCALARS = "secagg.scalars"  # float64: weight r, levels, metric clip, threshold
_METRICS = "secagg.metric_values"  # float64, in the order of _NAMES
_NAMES = "secagg.metric_names"  # uint8 JSON
_NEIGHBOURS = "secagg.neighbour_ids"  # int64 (k,)
_NEIGHBOUR_KEYS = "secagg.neighbour_keys"  # uint8 (k, 2, 32)
_CHANNEL_KEYS = "secagg.channel_keys"  # uint8 (k, 32): AES-GCM key shared with each
_HOLDERS = "secagg.holder_ids"  # int64 (m,): neighbours whose shares this client holds
_HELD = "secagg.held_shares"  # uint8 (m, 2, SHARE_BYTES)


class ProtocolError(FederaError):
    """The server asked for something the protocol forbids; the client refuses."""


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """What one client keeps between the stages of one round (all of it secret)."""

    round_num: int
    stage: int
    client_id: int
    keys: npt.NDArray[np.uint8]
    encoded: npt.NDArray[np.uint32]
    scalars: npt.NDArray[np.float64]
    metric_names: list[str]
    metric_values: npt.NDArray[np.float64]
    neighbours: npt.NDArray[np.int64] = field(default_factory=lambda: wire.ids([]))
    neighbour_keys: npt.NDArray[np.uint8] = field(
        default_factory=lambda: np.zeros((0, 2, crypto.KEY_BYTES), np.uint8)
    )
    channel_keys: npt.NDArray[np.uint8] = field(
        default_factory=lambda: np.zeros((0, crypto.KEY_BYTES), np.uint8)
    )
    holders: npt.NDArray[np.int64] = field(default_factory=lambda: wire.ids([]))
    held: npt.NDArray[np.uint8] = field(
        default_factory=lambda: np.zeros((0, 2, wire.SHARE_BYTES), np.uint8)
    )

    def key(self, index: int) -> bytes:
        """Return secret 0 (c private key), 1 (s private key) or 2 (self-mask seed b)."""
        return bytes(self.keys[index])

    def to_arrays(self) -> Arrays:
        """Return the state as arrays (the "secagg." part of a client's state)."""
        return Arrays(
            {
                _STATE: wire.ids([self.round_num, self.stage, self.client_id]),
                _KEYS: self.keys,
                _INPUT: self.encoded,
                _SCALARS: self.scalars,
                _METRICS: self.metric_values,
                _NAMES: wire.encode_names(self.metric_names),
                _NEIGHBOURS: self.neighbours,
                _NEIGHBOUR_KEYS: self.neighbour_keys,
                _CHANNEL_KEYS: self.channel_keys,
                _HOLDERS: self.holders,
                _HELD: self.held,
            }
        )

    @classmethod
    def from_arrays(cls, arrays: Arrays) -> State | None:
        """Return the state in `arrays`, or None when there is none."""
        if _STATE not in arrays:
            return None
        round_num, stage, client_id = (int(v) for v in arrays[_STATE])
        return cls(
            round_num=round_num,
            stage=stage,
            client_id=client_id,
            keys=arrays[_KEYS],
            encoded=arrays[_INPUT],
            scalars=arrays[_SCALARS],
            metric_names=wire.decode_names(arrays[_NAMES]),
            metric_values=arrays[_METRICS],
            neighbours=arrays[_NEIGHBOURS],
            neighbour_keys=arrays[_NEIGHBOUR_KEYS],
            channel_keys=arrays[_CHANNEL_KEYS],
            holders=arrays[_HOLDERS],
            held=arrays[_HELD],
        )


def done_marker(round_num: int, client_id: int) -> Arrays:
    """Return the state left after a round's unmask stage: no secrets, unmask refused."""
    return State(
        round_num=round_num,
        stage=wire.STAGES.index(wire.UNMASK),
        client_id=client_id,
        keys=np.zeros((3, crypto.KEY_BYTES), np.uint8),
        encoded=np.zeros(0, np.uint32),
        scalars=np.zeros(4),
        metric_names=[],
        metric_values=np.zeros(0),
    ).to_arrays()


def _number(config: Config, key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedError(f"the stage config lacks the number {key!r}")
    return float(value)


def _integer(config: Config, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedError(f"the stage config lacks the integer {key!r}")
    return value


def check_result(sent: Arrays, result: TrainResult) -> TrainResult:
    """Check the wrapped client's result as the runner would, since it only sees the reply.

    Raises:
        ValueError: the arrays differ in spec from those sent or hold NaN or Inf, the
            arrays are not real numbers, or num_examples is not an int >= 0.
    """
    if isinstance(result.num_examples, bool) or not isinstance(result.num_examples, int):
        raise TypeError(f"num_examples must be an int, got {result.num_examples!r}")
    if result.num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {result.num_examples}")
    if not result.arrays.same_spec(sent):
        raise ValueError(f"fit() returned arrays {result.arrays.spec()} but was sent {sent.spec()}")
    if not result.arrays.is_finite():
        raise ValueError("fit() returned arrays containing NaN or Inf")
    if any(a.dtype.kind not in "biuf" for a in sent.values()):
        raise ValueError("secure aggregation needs arrays of real numbers")
    return replace(result, metrics=validate_metrics(result.metrics))


def setup(
    client_id: int, round_num: int, sent: Arrays, result: TrainResult, config: Config, seed: int
) -> tuple[Arrays, State]:
    """Encode the trained update and draw this round's keys; return the reply and state."""
    result = check_result(sent, result)
    num_clients = _integer(config, wire.NUM_CLIENTS)
    clip = _number(config, wire.CLIP)
    max_weight = _number(config, wire.MAX_WEIGHT)
    metric_clip = _number(config, wire.METRIC_CLIP)
    if not (num_clients >= 1 and clip > 0 and max_weight > 0 and metric_clip > 0):
        raise MalformedError("the setup config holds a non-positive size or bound")
    levels = quantize.levels_for(num_clients)
    weight = min(result.num_examples, max_weight) / max_weight
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5EC,)))
    size = sent.num_params
    encoded = np.empty(size + 2, dtype=quantize.RING_DTYPE)
    quantize.encode_update(
        [result.arrays[name] for name in sent],
        list(sent.values()),
        encoded[:size],
        clip=clip,
        weight=weight,
        levels=levels,
        random_bits=crypto.KeyStream(rng.bytes(crypto.KEY_BYTES), quantize.ENCODE_CHUNK).read,
    )
    encoded[size:] = quantize.encode_wide([weight], 0.0, 1.0, levels)
    c_private, c_public = crypto.generate_keypair()
    s_private, s_public = crypto.generate_keypair()
    self_seed = crypto.random_seed()
    names = sorted(k for k, v in result.metrics.items() if math.isfinite(v))
    state = State(
        round_num=round_num,
        stage=wire.STAGES.index(wire.SETUP),
        client_id=client_id,
        keys=np.frombuffer(c_private + s_private + self_seed, np.uint8).reshape(3, -1).copy(),
        encoded=encoded,
        scalars=np.array([weight, levels, metric_clip, 0.0]),
        metric_names=names,
        metric_values=np.array([result.metrics[n] for n in names], dtype=np.float64),
    )
    reply = wire.as_arrays(
        {
            wire.PUBLIC_KEYS: np.frombuffer(c_public + s_public, np.uint8).reshape(2, -1),
            wire.COMMITMENT: np.frombuffer(crypto.commitment(self_seed), np.uint8),
            wire.NAMES: wire.encode_names(names),
        }
    )
    return reply, state


def _expect_stage(state: State | None, round_num: int, stage: str) -> State:
    before = wire.STAGES[wire.STAGES.index(stage) - 1]
    if state is None or state.round_num != round_num:
        raise ProtocolError(f"asked for the {stage} stage of round {round_num} before its setup")
    if state.stage != wire.STAGES.index(before):
        done = wire.STAGES[state.stage]
        raise ProtocolError(
            f"asked for the {stage} stage of round {round_num} after the {done} stage; "
            f"it must follow {before}"
        )
    return state


def share(
    state: State | None, round_num: int, arrays: Arrays, config: Config
) -> tuple[Arrays, State]:
    """Share b_u and s_u's private key with the neighbours, encrypted to each."""
    state = _expect_stage(state, round_num, wire.SHARE)
    neighbours = wire.id_list(wire.field(arrays, wire.NEIGHBOURS, np.int64, [None]))
    keys = wire.field(arrays, wire.PUBLIC_KEYS, np.uint8, [len(neighbours), 2, crypto.KEY_BYTES])
    threshold = _integer(config, wire.THRESHOLD)
    u = state.client_id
    if u in neighbours or any(v < 0 for v in neighbours):
        raise ProtocolError(f"the neighbour list {neighbours} is invalid for client {u}")
    if not len(neighbours) / 2 < threshold <= len(neighbours):
        raise ProtocolError(
            f"threshold {threshold} with {len(neighbours)} neighbours is unsafe: it must be "
            "more than half of them (or the server could recover both of a client's secrets) "
            "and at most all of them"
        )
    seed_shares = shamir.split(state.key(2), threshold, neighbours)
    key_shares = shamir.split(state.key(1), threshold, neighbours)
    ciphertexts = np.zeros((len(neighbours), wire.CIPHERTEXT_BYTES), np.uint8)
    channel_keys = np.zeros((len(neighbours), crypto.KEY_BYTES), np.uint8)
    c_private = crypto.private_key(state.key(0))
    for i, v in enumerate(neighbours):
        key = crypto.agree(c_private, bytes(keys[i, 0]), crypto.ENCRYPTION_LABEL)
        channel_keys[i] = np.frombuffer(key, np.uint8)
        plaintext = wire.pack_shares(u, v, seed_shares[i], key_shares[i])
        blob = crypto.encrypt(key, plaintext, crypto.associated_data(round_num, u, v))
        ciphertexts[i] = np.frombuffer(blob, np.uint8)
    reply = wire.as_arrays({wire.RECIPIENTS: wire.ids(neighbours), wire.CIPHERTEXTS: ciphertexts})
    new = replace(
        state,
        stage=wire.STAGES.index(wire.SHARE),
        neighbours=wire.ids(neighbours),
        neighbour_keys=np.ascontiguousarray(keys),
        channel_keys=channel_keys,
        scalars=np.concatenate([state.scalars[:3], [threshold]]),
    )
    return reply, new


def _metric_codes(state: State, names: list[str]) -> list[Any]:
    weight, levels, metric_clip = float(state.scalars[0]), int(state.scalars[1]), state.scalars[2]
    own = dict(zip(state.metric_names, state.metric_values.tolist(), strict=True))
    codes = []
    for name in names:
        value, present = (own[name], weight) if name in own else (0.0, 0.0)
        clipped = float(np.clip(value, -metric_clip, metric_clip))
        codes.append(quantize.encode_wide([weight * clipped], -metric_clip, metric_clip, levels))
        codes.append(quantize.encode_wide([present], 0.0, 1.0, levels))
    return codes


def mask(
    state: State | None, round_num: int, arrays: Arrays, config: Config
) -> tuple[Arrays, State]:
    """Decrypt the neighbours' shares and return the masked input y_u."""
    state = _expect_stage(state, round_num, wire.MASK)
    senders = wire.id_list(wire.field(arrays, wire.SENDERS, np.int64, [None]))
    blobs = wire.field(arrays, wire.CIPHERTEXTS, np.uint8, [len(senders), wire.CIPHERTEXT_BYTES])
    names_value = config.get(wire.METRIC_NAMES, "[]")
    names = wire.decode_names(str(names_value))
    u, neighbours = state.client_id, state.neighbours.tolist()
    unknown = sorted(set(senders) - set(neighbours))
    if unknown:
        raise ProtocolError(f"got shares from clients {unknown}, which are not neighbours of {u}")
    if len(senders) < int(state.scalars[3]):
        raise ProtocolError(
            f"only {len(senders)} of {len(neighbours)} neighbours are left, fewer than the "
            f"threshold {int(state.scalars[3])}; masking with so few could let the server "
            "learn this client's update, so it refuses"
        )
    held = np.zeros((len(senders), 2, wire.SHARE_BYTES), np.uint8)
    for i, v in enumerate(senders):
        j = neighbours.index(v)
        key = bytes(state.channel_keys[j])
        try:
            plaintext = crypto.decrypt(
                key, bytes(blobs[i]), crypto.associated_data(round_num, v, u)
            )
        except crypto.TamperedError as exc:
            raise crypto.TamperedError(
                f"the share message from client {v} failed authentication ({exc}): it was "
                "tampered with or not encrypted for this client; refusing this round"
            ) from None
        seed_share, key_share = wire.unpack_shares(plaintext, v, u)
        held[i, 0] = np.frombuffer(seed_share, np.uint8)
        held[i, 1] = np.frombuffer(key_share, np.uint8)
    codes = _metric_codes(state, names)
    masked = np.empty(len(state.encoded) + sum(len(c) for c in codes), quantize.RING_DTYPE)
    masked[: len(state.encoded)] = state.encoded
    masked[len(state.encoded) :] = np.concatenate(codes) if codes else []
    masks = [(state.key(2), 1)]
    s_private = crypto.private_key(state.key(1))
    for v in senders:
        j = neighbours.index(v)
        pair_seed = crypto.agree(s_private, bytes(state.neighbour_keys[j, 1]), crypto.MASK_LABEL)
        masks.append((pair_seed, 1 if u < v else -1))
    crypto.apply_masks(masked, masks)
    new = replace(
        state,
        stage=wire.STAGES.index(wire.MASK),
        encoded=np.zeros(0, np.uint32),  # sent: no longer needed
        holders=wire.ids(senders),
        held=held,
    )
    return wire.as_arrays({wire.MASKED: masked}), new


def unmask(state: State | None, round_num: int, arrays: Arrays) -> tuple[Arrays, Arrays]:
    """Reveal the shares the server asks for; return the reply and the state left after.

    Raises:
        ProtocolError: a client is listed both as survivor and as dropped, this client
            holds no share of a listed client, or this client is listed as dropped.
    """
    state = _expect_stage(state, round_num, wire.UNMASK)
    survivors = wire.id_list(wire.field(arrays, wire.SURVIVORS, np.int64, [None]))
    dropped = wire.id_list(wire.field(arrays, wire.DROPPED, np.int64, [None]))
    u, holders = state.client_id, state.holders.tolist()
    both = sorted(set(survivors) & set(dropped))
    if both:
        raise ProtocolError(
            f"the server asked for both secrets of clients {both}; revealing both would "
            "unmask their updates, so this client refuses"
        )
    if u in dropped:
        raise ProtocolError(f"the server lists this client ({u}) as dropped; refusing")
    unknown = sorted(set(survivors + dropped) - set(holders))
    if unknown:
        raise ProtocolError(f"this client holds no shares of clients {unknown}")
    seed_shares = np.stack(
        [state.held[holders.index(v), 0] for v in survivors]
        or [np.zeros(wire.SHARE_BYTES, np.uint8)]
    )[: len(survivors)]
    key_shares = np.stack(
        [state.held[holders.index(v), 1] for v in dropped] or [np.zeros(wire.SHARE_BYTES, np.uint8)]
    )[: len(dropped)]
    reply = wire.as_arrays(
        {
            wire.SEED_OWNERS: wire.ids(survivors),
            wire.SEED_SHARES: seed_shares,
            wire.KEY_OWNERS: wire.ids(dropped),
            wire.KEY_SHARES: key_shares,
        }
    )
    return reply, done_marker(round_num, u)
