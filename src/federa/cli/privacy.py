"""`--dp central|local`: wrap the strategy and the clients of a run in differential privacy."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

from federa.cli.config import RunConfig
from federa.cli.strategies import cohort_size
from federa.client.base import Client
from federa.client.local_dp import LocalDPClient
from federa.client.runner import ClientFn
from federa.privacy.accountant import AccountantName, noise_for_target_epsilon
from federa.privacy.adaptive import AdaptiveClipping
from federa.privacy.dp_strategy import CentralDP, LocalDPAccounting
from federa.strategy.base import Strategy


def default_delta(num_clients: int) -> float:
    """Return min(1e-5, 1 / N^1.1): McMahan et al.'s delta, capped for small populations."""
    return min(1e-5, math.pow(num_clients, -1.1))


def resolve_dp(cfg: RunConfig) -> RunConfig:
    """Fill in delta, the accountant, the clip norm and, from a target epsilon, the noise.

    Central DP sizes z for `rounds` rounds at the sampling rate of the configured cohort;
    local DP for a client that takes part in every round. The resolved values go into
    config.toml, so the run directory records the privacy parameters actually used.
    """
    if cfg.dp is None:
        return cfg
    assert cfg.num_clients is not None  # resolved by build_experiment first
    delta = cfg.target_delta if cfg.target_delta is not None else default_delta(cfg.num_clients)
    accountant = accountant_name(cfg)
    z = cfg.noise_multiplier
    if z is None:
        assert cfg.target_epsilon is not None  # validate_dp requires one of the two
        rate = 1.0
        if cfg.dp == "central":
            rate = cohort_size(cfg.num_clients, cfg.fraction_train, 1) / cfg.num_clients
        z = noise_for_target_epsilon(
            cfg.target_epsilon,
            delta=delta,
            sampling_rate=rate,
            num_steps=cfg.rounds,
            accountant=accountant,
        )
    clip = cfg.clip_norm
    if clip is None:  # adaptive clipping starts from the paper's C_0
        clip = AdaptiveClipping().initial_clip_norm
    return replace(
        cfg, target_delta=delta, noise_multiplier=z, accountant=accountant, clip_norm=clip
    )


def accountant_name(cfg: RunConfig) -> AccountantName:
    """Return the accountant `cfg` names ("rdp" unless set)."""
    return "pld" if cfg.accountant == "pld" else "rdp"


def wrap_strategy(cfg: RunConfig, strategy: Strategy) -> Strategy:
    """Wrap `strategy` in CentralDP or LocalDPAccounting as `cfg.dp` says (resolved cfg)."""
    if cfg.dp is None:
        return strategy
    assert cfg.noise_multiplier is not None and cfg.target_delta is not None
    assert cfg.num_clients is not None
    if cfg.dp == "local":
        return LocalDPAccounting(
            strategy,
            noise_multiplier=cfg.noise_multiplier,
            delta=cfg.target_delta,
            target_epsilon=cfg.target_epsilon,
            accountant=accountant_name(cfg),
        )
    assert cfg.clip_norm is not None  # resolve_dp fills it in
    clip: float | AdaptiveClipping = cfg.clip_norm
    if cfg.adaptive_clip:
        clip = AdaptiveClipping(initial_clip_norm=cfg.clip_norm)
    return CentralDP(
        strategy,
        noise_multiplier=cfg.noise_multiplier,
        clip_norm=clip,
        num_clients=cfg.num_clients,
        delta=cfg.target_delta,
        target_epsilon=cfg.target_epsilon,
        accountant=accountant_name(cfg),
    )


def make_local_dp_client(
    client_fn: ClientFn, clip_norm: float, noise_multiplier: float, cid: int
) -> Client:
    """Build client `cid` with `client_fn` and wrap it in local DP."""
    return LocalDPClient(client_fn(cid), clip_norm=clip_norm, noise_multiplier=noise_multiplier)


def wrap_clients(cfg: RunConfig, client_fn: ClientFn) -> ClientFn:
    """Wrap every client in LocalDPClient for --dp local (picklable for worker processes)."""
    if cfg.dp != "local":
        return client_fn
    assert cfg.clip_norm is not None and cfg.noise_multiplier is not None
    return functools.partial(make_local_dp_client, client_fn, cfg.clip_norm, cfg.noise_multiplier)
