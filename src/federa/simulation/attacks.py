"""Byzantine clients for testing robust aggregation (simulation only).

A fraction of the clients misbehave in one of the ways the robust-aggregation
literature evaluates against (Blanchard et al. 2017; Yin et al. 2018; Fang et al. 2020):

- ``signflip``: send x - scale * (y - x), the honest update reversed and boosted;
- ``scaled``: send x + scale * (y - x), the honest update boosted;
- ``noise``: send x + N(0, scale^2) noise in place of an update;
- ``labelflip``: train honestly on flipped labels (c -> C-1-c; PyTorch clients only);
- ``constant``: send x + scale in every coordinate.

Attackers are chosen once per run from the run seed; their randomness comes from the
task seed, so attacked runs are as reproducible as honest ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from federa.client.base import Client
from federa.client.runner import ClientFn
from federa.core.arrays import Arrays
from federa.core.messages import Config, EvalResult, TrainResult
from federa.errors import ConfigError

ATTACKS = ("constant", "labelflip", "noise", "scaled", "signflip")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attack:
    """Which attack, how strong, and which clients run it."""

    name: str
    scale: float = 10.0
    attackers: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ConfigError(
                f"--attack: unknown attack {self.name!r}; choose one of: {', '.join(ATTACKS)}"
            )
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ConfigError(f"--attack-scale must be a positive number, got {self.scale}")


def choose_attackers(num_clients: int, fraction: float, seed: int) -> frozenset[int]:
    """Pick round(fraction * num_clients) attacker ids with a generator seeded by `seed`."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"--attackers must be a fraction in [0, 1), got {fraction}")
    count = round(fraction * num_clients)
    rng = np.random.default_rng([seed, 0xA77AC])
    return frozenset(int(i) for i in rng.choice(num_clients, size=count, replace=False))


class ByzantineClient(Client):
    """Wrap an honest client and corrupt what it sends back."""

    def __init__(self, inner: Client, attack: Attack) -> None:
        self.inner = inner
        self.attack = attack
        if attack.name == "labelflip":
            labels = getattr(inner, "y", None)
            if labels is None:
                raise ConfigError("--attack labelflip needs a client with a label tensor `y`")
            num_classes = int(labels.max()) + 1
            inner.y = (num_classes - 1) - labels  # type: ignore[attr-defined]  # checked above

    @property
    def state(self) -> Arrays:
        """Return the wrapped client's state."""
        return self.inner.state

    @state.setter
    def state(self, value: Arrays) -> None:
        self.inner.state = value

    def fit(self, arrays: Arrays, config: Config) -> TrainResult:
        """Train honestly, then corrupt the update."""
        honest = self.inner.fit(arrays, config)
        if self.attack.name == "labelflip":
            return honest
        rng = np.random.default_rng(int(config.get("seed", 0)))
        scale = self.attack.scale
        out = {}
        for name, x in arrays.items():
            y = honest.arrays[name]
            if x.dtype.kind != "f":
                out[name] = y
                continue
            x64 = x.astype(np.float64)
            update = y.astype(np.float64) - x64
            bad = {
                "signflip": x64 - scale * update,
                "scaled": x64 + scale * update,
                "noise": x64 + rng.normal(0.0, scale, size=x.shape),
                "constant": x64 + scale,
            }[self.attack.name]
            out[name] = bad.astype(x.dtype)
        return TrainResult(
            arrays=Arrays(out), num_examples=honest.num_examples, metrics=honest.metrics
        )

    def evaluate(self, arrays: Arrays, config: Config) -> EvalResult:
        """Evaluate honestly (attackers lie about their updates, not their scores)."""
        return self.inner.evaluate(arrays, config)


def _build(client_fn: ClientFn, attack: Attack, cid: int) -> Client:
    client = client_fn(cid)
    return ByzantineClient(client, attack) if cid in attack.attackers else client


def with_attack(client_fn: ClientFn, attack: Attack) -> Callable[[int], Client]:
    """Return a picklable client_fn whose attacker ids build Byzantine clients."""
    return functools.partial(_build, client_fn, attack)
