"""The `Client` contract a user implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

from federa.core.arrays import Arrays
from federa.core.messages import Config, EvalResult, TrainResult


class Client(ABC):
    """One participant holding private data.

    The config a client receives always carries two reserved keys besides the
    strategy's own: ``round_num`` (1-based) and ``seed``, an integer derived from
    (run seed, round_num, client id). Seed every random choice of local training from
    it and a run is reproducible on any executor or transport.

    `state` holds what a client keeps between rounds (SCAFFOLD's control variate, for
    example). Read and replace it in `fit`; federa persists it per client: a deployed
    client keeps its own object alive, and simulation, which builds a fresh client for
    each task, stores it between rounds on the client's behalf.
    """

    state: Arrays = Arrays()

    @abstractmethod
    def fit(self, arrays: Arrays, config: Config) -> TrainResult:
        """Train locally starting from `arrays` and return the updated arrays."""

    @abstractmethod
    def evaluate(self, arrays: Arrays, config: Config) -> EvalResult:
        """Evaluate `arrays` on local data."""
