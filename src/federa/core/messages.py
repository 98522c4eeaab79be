"""Messages exchanged between the round loop and clients, as frozen dataclasses.

The server sends `TrainTask` / `EvalTask`; a client answers with `TrainResult` /
`EvalResult`, or the runner records a `Failure` on its behalf.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from federa.core.arrays import Arrays

Scalar: TypeAlias = bool | int | float | str
Config: TypeAlias = Mapping[str, Scalar]
"""Instructions going down to a client (learning rate, local epochs, ...)."""
Metrics: TypeAlias = Mapping[str, float]
"""Numbers going up from a client or an evaluation (accuracy, loss, ...)."""

Phase: TypeAlias = Literal["train", "evaluate"]

PROTOCOL_KEY = "federa.protocol"
"""Config key of a training task that is one step of a multi-step protocol.

Its value names the protocol and the step ("secagg+/share", see
`federa.privacy.secagg`). Such a task is answered with the protocol's own arrays (keys,
ciphertexts, a masked vector), so the runner and the transports accept result arrays
whose names, dtypes or shapes differ from the task's.
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainTask:
    """Ask one client to train from `arrays` for round `round_num`.

    `seed` is derived from (run seed, round_num, client_id) so a client's randomness
    does not depend on where or when it runs. `state` is the client's own state from
    its previous round (see `Client.state`) when the transport keeps it on the client's
    behalf, as simulation does; it never crosses the wire.
    """

    round_num: int
    client_id: int
    arrays: Arrays
    config: Config = field(default_factory=dict)
    seed: int = 0
    state: Arrays | None = field(default=None, compare=False, repr=False)

    @property
    def phase(self) -> Phase:
        """Return "train"."""
        return "train"


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalTask:
    """Ask one client to evaluate `arrays` on its local data."""

    round_num: int
    client_id: int
    arrays: Arrays
    config: Config = field(default_factory=dict)
    seed: int = 0

    @property
    def phase(self) -> Phase:
        """Return "evaluate"."""
        return "evaluate"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainResult:
    """What a client sends back after local training.

    `state` carries the client's state for its next round back to a transport that
    keeps it (simulation); strategies never see it and it never crosses the wire.
    """

    arrays: Arrays
    num_examples: int
    metrics: Metrics = field(default_factory=dict)
    state: Arrays | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalResult:
    """What a client sends back after local evaluation."""

    loss: float
    num_examples: int
    metrics: Metrics = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A task that produced no usable result: the client raised, timed out or misbehaved."""

    client_id: int
    round_num: int
    phase: Phase
    message: str


Task: TypeAlias = TrainTask | EvalTask
TaskResult: TypeAlias = TrainResult | EvalResult | Failure


def validate_metrics(metrics: object) -> dict[str, float]:
    """Return `metrics` as a dict of floats, or raise TypeError naming the bad entry."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of str to number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric names must be strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars and 0-d arrays
            except (TypeError, ValueError):
                raise TypeError(
                    f"metric {key!r} must be a number, got {type(value).__name__}"
                ) from None
        out[key] = float(value)
    return out


def is_finite_number(value: float) -> bool:
    """Return whether `value` is neither NaN nor infinite."""
    return math.isfinite(value)
