"""The server's side of the four SecAgg+ stages (see `federa.privacy.secagg.server`).

Each stage sends one task per client through `collect` and parses the replies; a client
whose task fails or whose reply is malformed is recorded as a failure of the round and
takes no further part in it. A stage that leaves too few clients for the rest of the
protocol aborts the round with an `AggregationError` before anything more is asked of
the clients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from federa.core.arrays import Arrays
from federa.core.messages import Failure, TrainResult, TrainTask
from federa.errors import AggregationError
from federa.privacy.secagg import graph, recover, wire
from federa.privacy.secagg.participant import ProtocolError

logger = logging.getLogger(__name__)

Collect = Callable[[Sequence[TrainTask]], tuple[list[tuple[int, TrainResult]], list[Failure]]]
"""Runs tasks and returns (results, failures), both sorted by client id."""
T = TypeVar("T")


@dataclass(slots=True)
class Round:
    """The server's view of one round in progress."""

    round_num: int
    tasks: dict[int, TrainTask]
    degree: int
    threshold: int
    failures: dict[int, Failure] = field(default_factory=dict)
    graph: dict[int, list[int]] = field(default_factory=dict)

    def fail(self, client_id: int, stage: str, message: str) -> None:
        """Record that `client_id` dropped out or misbehaved (its first failure counts)."""
        self.failures.setdefault(
            client_id,
            Failure(
                client_id=client_id,
                round_num=self.round_num,
                phase="train",
                message=f"secure aggregation ({stage} stage): {message}",
            ),
        )

    def abort(self, stage: str, problem: str) -> AggregationError:
        """Return the error that ends a round which cannot complete."""
        return AggregationError(
            f"secure aggregation of round {self.round_num} failed at the {stage} stage: "
            f"{problem} (a lower --secagg-threshold tolerates more dropouts)"
        )


@dataclass(frozen=True, slots=True)
class Setup:
    """What a client advertised in the setup stage."""

    c_public: bytes
    s_public: bytes
    commitment: bytes
    metric_names: list[str]


def run_stage(
    rnd: Round,
    stage: str,
    payloads: Mapping[int, tuple[Arrays, Mapping[str, Any]]],
    collect: Collect,
    parse: Callable[[int, Arrays], T],
) -> dict[int, T]:
    """Send one stage's tasks; return the parsed replies, recording every failure."""
    tasks = [
        TrainTask(
            round_num=rnd.round_num,
            client_id=cid,
            arrays=arrays,
            config={**config, **wire.stage_config(stage), wire.CLIENT_ID: cid},
            seed=rnd.tasks[cid].seed,
        )
        for cid, (arrays, config) in sorted(payloads.items())
    ]
    results, failures = collect(tasks)
    for failure in failures:
        rnd.fail(failure.client_id, stage, failure.message)
    parsed: dict[int, T] = {}
    for cid, result in results:
        try:
            parsed[cid] = parse(cid, result.arrays)
        except (wire.MalformedError, ProtocolError) as exc:
            rnd.fail(cid, stage, f"malformed reply: {exc}")
    logger.debug(
        "round %d, %s stage: %d of %d replied", rnd.round_num, stage, len(parsed), len(tasks)
    )
    return parsed


def setup(rnd: Round, settings: Mapping[str, Any], collect: Collect) -> dict[int, Setup]:
    """Send the strategy's tasks with the encoding `settings`; return what clients advertise."""
    extra = {wire.NUM_CLIENTS: len(rnd.tasks), **settings}
    payloads = {cid: (t.arrays, {**t.config, **extra}) for cid, t in rnd.tasks.items()}

    def parse(cid: int, arrays: Arrays) -> Setup:
        keys = wire.field(arrays, wire.PUBLIC_KEYS, np.uint8, [2, wire.SECRET_BYTES])
        commitment = wire.field(arrays, wire.COMMITMENT, np.uint8, [wire.SECRET_BYTES])
        names = wire.decode_names(wire.field(arrays, wire.NAMES, np.uint8, [None]))
        return Setup(bytes(keys[0]), bytes(keys[1]), bytes(commitment), names)

    setups = run_stage(rnd, wire.SETUP, payloads, collect, parse)
    needed = max(graph.MIN_CLIENTS, rnd.threshold + 1)
    if len(setups) < needed:
        raise rnd.abort(
            wire.SETUP,
            f"only {len(setups)} of {len(rnd.tasks)} clients answered and a threshold of "
            f"{rnd.threshold} needs {needed}; no secret was shared yet",
        )
    return setups


def share(
    rnd: Round, setups: Mapping[int, Setup], collect: Collect
) -> dict[int, dict[int, npt.NDArray[np.uint8]]]:
    """Return each sender's ciphertexts by recipient."""
    payloads = {}
    for u in setups:
        keys = [setups[v].c_public + setups[v].s_public for v in rnd.graph[u]]
        public = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 2, -1)
        arrays = wire.as_arrays({wire.NEIGHBOURS: wire.ids(rnd.graph[u]), wire.PUBLIC_KEYS: public})
        payloads[u] = (arrays, {wire.THRESHOLD: rnd.threshold})

    def parse(u: int, arrays: Arrays) -> dict[int, npt.NDArray[np.uint8]]:
        neighbours = rnd.graph[u]
        recipients = wire.field(arrays, wire.RECIPIENTS, np.int64, [len(neighbours)])
        if recipients.tolist() != neighbours:
            raise wire.MalformedError("its ciphertexts are not addressed to its neighbours")
        shape = [len(neighbours), wire.CIPHERTEXT_BYTES]
        blobs = wire.field(arrays, wire.CIPHERTEXTS, np.uint8, shape)
        return {v: blobs[i] for i, v in enumerate(neighbours)}

    return run_stage(rnd, wire.SHARE, payloads, collect, parse)


def select(rnd: Round, ciphertexts: Mapping[int, object]) -> set[int]:
    """Return the clients asked to mask: those with `threshold` neighbours left.

    A client with fewer would refuse to mask (its input would be too exposed) and
    could not be recovered from if it dropped; leaving it out now, before anyone
    masks with it, costs nothing and reveals nothing.
    """
    alive, t = set(ciphertexts), rnd.threshold
    while weak := sorted(u for u in alive if len(alive.intersection(rnd.graph[u])) < t):
        for u in weak:
            left = len(alive.intersection(rnd.graph[u]))
            rnd.fail(
                u,
                wire.MASK,
                f"left out: only {left} of its neighbours are still online, fewer than the "
                f"threshold {t}",
            )
        alive.difference_update(weak)
    if len(alive) < graph.MIN_CLIENTS:
        raise rnd.abort(
            wire.SHARE,
            f"{len(ciphertexts)} clients shared their keys, but too few of them have "
            f"{t} neighbours still online; no masked input was requested",
        )
    return alive


def mask(
    rnd: Round,
    alive: set[int],
    ciphertexts: Mapping[int, Mapping[int, npt.NDArray[np.uint8]]],
    names: list[str],
    length: int,
    collect: Collect,
) -> dict[int, npt.NDArray[np.uint32]]:
    """Forward the share ciphertexts; return the masked inputs."""
    payloads = {}
    for u in sorted(alive):
        senders = sorted(alive.intersection(rnd.graph[u]))
        blobs = np.stack([ciphertexts[v][u] for v in senders])
        arrays = wire.as_arrays({wire.SENDERS: wire.ids(senders), wire.CIPHERTEXTS: blobs})
        payloads[u] = (arrays, {wire.METRIC_NAMES: json.dumps(names)})

    def parse(u: int, arrays: Arrays) -> npt.NDArray[np.uint32]:
        return wire.field(arrays, wire.MASKED, np.uint32, [length])

    return run_stage(rnd, wire.MASK, payloads, collect, parse)


def needed(rnd: Round, alive: set[int], survivors: set[int]) -> dict[int, tuple[int, str]]:
    """Return owner -> (0 for the self-mask seed, 1 for the mask key, its name)."""
    needs = dict.fromkeys(survivors, (0, "self-mask seed"))
    for v in alive - survivors:
        if survivors.intersection(rnd.graph[v]):  # someone masked with v
            needs[v] = (1, "mask key")
    return needs


def unmask(
    rnd: Round,
    setups: Mapping[int, Setup],
    alive: set[int],
    masked: Mapping[int, npt.NDArray[np.uint32]],
    collect: Collect,
) -> npt.NDArray[np.uint32]:
    """Collect the shares, recover the secrets and return the unmasked sum."""
    survivors, t = set(masked), rnd.threshold
    needs = needed(rnd, alive, survivors)
    for owner, (_, what) in sorted(needs.items()):
        holders = len(survivors.intersection(rnd.graph[owner]))
        if holders < t:
            raise rnd.abort(
                wire.MASK,
                f"client {owner}'s {what} needs {t} shares but only {holders} of its "
                f"neighbours sent their masked input ({len(alive) - len(survivors)} "
                "clients dropped out); no share was requested, so nothing was revealed",
            )
    if len(survivors) < graph.MIN_CLIENTS:
        raise rnd.abort(wire.MASK, f"only {len(survivors)} clients sent a masked input")
    wanted = {
        w: (
            sorted(survivors.intersection(rnd.graph[w])),
            sorted((alive - survivors).intersection(rnd.graph[w])),
        )
        for w in sorted(survivors)
    }
    payloads: dict[int, tuple[Arrays, Mapping[str, Any]]] = {
        w: (wire.as_arrays({wire.SURVIVORS: wire.ids(a), wire.DROPPED: wire.ids(d)}), {})
        for w, (a, d) in wanted.items()
    }

    def parse(w: int, arrays: Arrays) -> tuple[dict[int, bytes], dict[int, bytes]]:
        out: list[dict[int, bytes]] = []
        for owners_name, shares_name, want in (
            (wire.SEED_OWNERS, wire.SEED_SHARES, wanted[w][0]),
            (wire.KEY_OWNERS, wire.KEY_SHARES, wanted[w][1]),
        ):
            owners = wire.field(arrays, owners_name, np.int64, [len(want)])
            if owners.tolist() != want:
                raise wire.MalformedError(f"{owners_name!r} lists other clients than asked")
            shares = wire.field(arrays, shares_name, np.uint8, [len(want), wire.SHARE_BYTES])
            out.append({v: bytes(shares[i]) for i, v in enumerate(want)})
        return out[0], out[1]

    replies = run_stage(rnd, wire.UNMASK, payloads, collect, parse)
    secrets = recover_secrets(rnd, setups, needs, replies)
    masks = recover.Masks(
        seeds={u: secrets[u] for u in survivors},
        dropped_keys={v: secrets[v] for v in needs if v not in survivors},
        public_keys={u: setups[u].s_public for u in survivors},
        graph=rnd.graph,
    )
    return recover.unmasked_sum(masked, masks)


def recover_secrets(
    rnd: Round,
    setups: Mapping[int, Setup],
    needs: Mapping[int, tuple[int, str]],
    replies: Mapping[int, tuple[dict[int, bytes], dict[int, bytes]]],
) -> dict[int, bytes]:
    """Return every secret in `needs`, checked; raise if one has too few shares."""
    shares = {
        owner: [(w, replies[w][kind][owner]) for w in sorted(replies) if owner in replies[w][kind]]
        for owner, (kind, _) in needs.items()
    }
    for owner, (_, what) in sorted(needs.items()):
        if len(shares[owner]) < rnd.threshold:
            raise rnd.abort(
                wire.UNMASK,
                f"only {len(shares[owner])} of the {rnd.threshold} shares of client "
                f"{owner}'s {what} came back (clients dropped out while unmasking); "
                "fewer than the threshold say nothing about it, and the sum stays masked",
            )
    secrets: dict[int, bytes] = {}
    for owner, (kind, what) in sorted(needs.items()):
        check = (
            recover.opens(setups[owner].commitment)
            if kind == 0
            else recover.is_private_key_of(setups[owner].s_public)
        )
        label = f"client {owner}'s {what}"
        secrets[owner], bad = recover.recover_secret(shares[owner], rnd.threshold, check, label)
        for holder in bad:
            logger.warning(
                "round %d: client %d sent a share of %s that disagrees with the others "
                "(tampered); it was ignored",
                rnd.round_num,
                holder,
                label,
            )
    return secrets
