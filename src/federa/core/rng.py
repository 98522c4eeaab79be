"""Seed derivation: every random stream is a pure function of the run seed and its role.

Per-client seeds derive from (seed, round_num, client_id), never from the order in
which work happens to finish, so a run is reproducible on any executor or transport.
"""

from __future__ import annotations

import zlib

import numpy as np

# Distinct streams for distinct roles, so a server sampling change never shifts client seeds.
_STREAMS = {"server": 0, "train": 1, "evaluate": 2}


def derive_seed(seed: int, round_num: int, client_id: int = -1, stream: str = "train") -> int:
    """Return a 63-bit seed for one (run, round, client, stream) combination.

    Args:
        seed: The run seed.
        round_num: 1-based round number (0 for set-up before the first round).
        client_id: The client, or -1 for a server-side stream.
        stream: "server", "train", "evaluate" or any other label.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    tag = _STREAMS.get(stream, zlib.crc32(stream.encode()) + len(_STREAMS))
    key = (int(round_num), int(client_id) + 1, tag)
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=key).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def round_rng(seed: int, round_num: int) -> np.random.Generator:
    """Return the server's generator for one round (cohort sampling)."""
    return np.random.default_rng(derive_seed(seed, round_num, -1, "server"))
