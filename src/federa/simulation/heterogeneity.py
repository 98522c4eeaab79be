"""Device heterogeneity: per-client speed and availability on a simulated wall clock.

Real federations are made of phones and sensors that compute at very different speeds
and are often off. Systems papers model both: Bonawitz et al., "Towards Federated
Learning at Scale: System Design" (MLSys 2019) describe round deadlines that drop
stragglers and the diurnal availability of devices; Li et al., "Federated Optimization
in Heterogeneous Networks" (MLSys 2020) simulate stragglers by cutting slow clients'
work; Lai et al., "FedScale" (ICML 2022) replay per-device speed and availability traces.

Here every client has a `ClientProfile`: a relative `speed` and the probability that
it is online in a round. `HeterogeneousTransport` wraps any transport:

* a client offline this round is not listed as available, so it is never sampled;
* each answer is given a simulated duration, `latency_s + work / speed` with
  `work = num_examples * epochs * seconds_per_example` (evaluation: one forward pass,
  `evaluate_cost` of an epoch), and with a round deadline a client that would answer
  after it becomes a `Failure` ("straggler"), which the strategy ignores or refuses
  exactly as it does a crashed client;
* the round's simulated time (the slowest on-time client, or the deadline when someone
  missed it) is added to the round's timings as `simulated_*_s`;
* optionally, stragglers as Li et al. (2020, section 5.2) simulate them: in every round a
  fixed fraction of the training clients can only do a random whole number of epochs in
  [1, E-1] (E the round's local epochs). With `partial_work` they train that many epochs
  and their results count (FedProx's tolerance of inexact local solutions); without it
  they are dropped as FedAvg drops clients that cannot finish E epochs by the deadline
  (a `Failure`, and they do no work).

Everything derives from (seed, round_num, client_id), never from measured compute
time, so a heterogeneous run is as reproducible as any other (ARCHITECTURE.md rule 4).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from federa.core.messages import PROTOCOL_KEY, Failure, Task, TaskResult, TrainTask
from federa.core.rng import derive_seed
from federa.errors import ConfigError
from federa.transport.base import Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientProfile:
    """How one simulated device behaves.

    Attributes:
        speed: Compute speed relative to the reference device (> 0): 0.5 takes twice
            as long for the same work.
        availability: Probability in [0, 1] that the client is online in a round.
    """

    speed: float = 1.0
    availability: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ConfigError(f"a client's speed must be a positive number, got {self.speed}")
        if not 0.0 <= self.availability <= 1.0:
            raise ConfigError(f"availability must be in [0, 1], got {self.availability}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Heterogeneity:
    """Simulated device heterogeneity for `simulate(..., heterogeneity=...)`.

    Attributes:
        speed_sigma: Client speeds are drawn log-normal with median 1 and this sigma
            (0: every client computes at the reference speed). With sigma 1 the
            slowest tenth of clients is about 3.6 times slower than the median one.
        availability: (low, high): each client's probability of being online in a
            round is drawn uniformly from this range once; (1, 1) keeps everyone online.
        seconds_per_example: Simulated seconds the reference device spends on one
            example in one training epoch.
        latency_s: Simulated seconds every task costs regardless of speed (download,
            upload, start-up).
        deadline_s: Seconds after which the server stops waiting for a phase's answers;
            later ones become straggler Failures. None waits for everyone.
        epochs: Local epochs a training task costs when its config has no "epochs".
        evaluate_cost: Cost of evaluating one example relative to one training epoch
            on it (a forward pass without the backward one: about a third).
        profiles: Explicit per-client profiles (one per client, in client-id order)
            instead of drawing them from `speed_sigma` and `availability`.
        straggler_fraction: Fraction of each round's training clients that are
            stragglers (Li et al. 2020): round(fraction x cohort) of them, drawn from
            (seed, round_num), each able to do a whole number of epochs drawn uniformly
            from [1, E-1], E being the task's "epochs" (or `epochs`, which must then
            be >= 2).
        partial_work: Stragglers train their reduced epochs and their results count
            (FedProx); False drops them without training (FedAvg with a deadline).
    """

    speed_sigma: float = 0.0
    availability: tuple[float, float] = (1.0, 1.0)
    seconds_per_example: float = 0.01
    latency_s: float = 0.0
    deadline_s: float | None = None
    epochs: float = 1.0
    evaluate_cost: float = 1.0 / 3.0
    profiles: Sequence[ClientProfile] | None = None
    straggler_fraction: float = 0.0
    partial_work: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.straggler_fraction <= 1.0:
            raise ConfigError(
                f"straggler_fraction must be in [0, 1], got {self.straggler_fraction}"
            )
        low, high = self.availability
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(
                "availability must be (low, high) with 0 <= low <= high <= 1, "
                f"got {self.availability}"
            )
        for name in ("speed_sigma", "seconds_per_example", "latency_s", "epochs", "evaluate_cost"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ConfigError(
                f"deadline_s must be > 0 (or None to wait for all), got {self.deadline_s}"
            )

    def client_profiles(self, num_clients: int, seed: int) -> list[ClientProfile]:
        """Return one profile per client: the explicit ones, or drawn from the run seed.

        Raises:
            ConfigError: Explicit profiles do not number `num_clients`.
        """
        if self.profiles is not None:
            if len(self.profiles) != num_clients:
                raise ConfigError(
                    f"heterogeneity has {len(self.profiles)} profiles for {num_clients} clients; "
                    "give one profile per client"
                )
            return list(self.profiles)
        rng = np.random.default_rng(derive_seed(seed, 0, -1, "profiles"))
        speeds = rng.lognormal(0.0, self.speed_sigma, size=num_clients)
        online = rng.uniform(self.availability[0], self.availability[1], size=num_clients)
        return [
            ClientProfile(speed=float(s), availability=float(a))
            for s, a in zip(speeds, online, strict=True)
        ]


class HeterogeneousTransport:
    """Wrap a transport with per-client speed, availability and a round deadline.

    It is a round-aware transport (see `federa.server.loop.RoundAwareTransport`): the
    round loop tells it when a round begins, and it reports the round's simulated time.

    Args:
        inner: The transport whose clients are simulated (ids index `profiles`).
        profiles: One profile per client id.
        settings: Work model and deadline (its own `profiles` are not used here).
        seed: The run seed; availability draws derive from (seed, round_num).
    """

    def __init__(
        self,
        inner: Transport,
        profiles: Sequence[ClientProfile],
        settings: Heterogeneity,
        *,
        seed: int,
    ) -> None:
        self._inner = inner
        self._profiles = list(profiles)
        self._settings = settings
        self._seed = seed
        self._speeds = np.asarray([p.speed for p in self._profiles], dtype=np.float64)
        self._availability = np.asarray([p.availability for p in self._profiles])
        self._online = np.ones(len(self._profiles), dtype=bool)
        self._round_num = 0
        self._phase_s: dict[str, float] = {}
        self.clock_s = 0.0
        """Simulated seconds since the first round began."""

    def begin_round(self, round_num: int) -> None:
        """Draw which clients are online in round `round_num`."""
        rng = np.random.default_rng(derive_seed(self._seed, round_num, -1, "availability"))
        self._online = rng.random(len(self._profiles)) < self._availability
        self._round_num = round_num
        self._phase_s = {"train": 0.0, "evaluate": 0.0}

    def end_round(self, round_num: int) -> Mapping[str, float]:
        """Return the round's simulated phase times and the simulated clock after it."""
        train, evaluate = self._phase_s.get("train", 0.0), self._phase_s.get("evaluate", 0.0)
        self.clock_s += train + evaluate
        return {
            "simulated_train_s": train,
            "simulated_evaluate_s": evaluate,
            "simulated_round_s": train + evaluate,
            "simulated_clock_s": self.clock_s,
        }

    def available_clients(self) -> Sequence[int]:
        """Return the inner transport's clients that are online this round."""
        clients = self._inner.available_clients()
        beyond = [c for c in clients if not 0 <= c < len(self._profiles)]
        if beyond:
            raise ConfigError(
                f"clients {beyond[:5]} have no heterogeneity profile; give one profile for "
                f"each of the {len(clients)} clients"
            )
        return [c for c in clients if self._online[c]]

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Run the tasks and turn answers that miss the deadline into straggler Failures.

        Stragglers (`straggler_fraction`) train fewer epochs, or are dropped untrained.
        """
        tasks, dropped = self._stragglers(tasks)
        by_client = {t.client_id: t for t in tasks}
        yield from dropped
        for client_id, outcome in self._inner.run(tasks):
            task = by_client.get(client_id)
            yield client_id, outcome if task is None else self._on_clock(task, outcome)

    def _stragglers(self, tasks: Sequence[Task]) -> tuple[list[Task], list[tuple[int, TaskResult]]]:
        """Return the tasks to run (stragglers' epochs cut) and the dropped stragglers."""
        s = self._settings
        train = [t for t in tasks if isinstance(t, TrainTask) and PROTOCOL_KEY not in t.config]
        count = round(s.straggler_fraction * len(train))
        if not count:
            return list(tasks), []
        rng = np.random.default_rng(derive_seed(self._seed, self._round_num, -1, "stragglers"))
        chosen = rng.choice(len(train), size=count, replace=False)
        cut: dict[int, int] = {}
        for i in sorted(int(c) for c in chosen):
            full = _epochs(train[i], s.epochs)
            if full < 2:
                raise ConfigError(
                    f"stragglers do 1 to E-1 local epochs, but round {self._round_num} asks "
                    f"for E = {full:g}; use at least 2 local epochs or straggler_fraction 0"
                )
            cut[train[i].client_id] = int(rng.integers(1, int(full)))
        kept: list[Task] = []
        dropped: list[tuple[int, TaskResult]] = []
        for task in tasks:
            epochs = cut.get(task.client_id) if isinstance(task, TrainTask) else None
            if epochs is None or not isinstance(task, TrainTask):
                kept.append(task)
            elif s.partial_work:
                kept.append(replace(task, config={**task.config, "epochs": epochs}))
            else:
                message = f"straggler: could do {epochs} of {_epochs(task, s.epochs):g} epochs"
                failure = Failure(
                    client_id=task.client_id,
                    round_num=task.round_num,
                    phase=task.phase,
                    message=f"{message}, dropped",
                )
                dropped.append((task.client_id, failure))
        return kept, dropped

    def duration(self, task: Task, num_examples: int) -> float:
        """Return the simulated seconds `task`'s client needs for `num_examples` examples."""
        s = self._settings
        cost = _epochs(task, s.epochs) if isinstance(task, TrainTask) else s.evaluate_cost
        work = num_examples * cost * s.seconds_per_example
        return s.latency_s + work / float(self._speeds[task.client_id])

    def _on_clock(self, task: Task, outcome: TaskResult) -> TaskResult:
        if isinstance(outcome, Failure):
            return outcome
        seconds = self.duration(task, outcome.num_examples)
        deadline = self._settings.deadline_s
        phase = task.phase
        if deadline is not None and seconds > deadline:
            self._phase_s[phase] = deadline
            return Failure(
                client_id=task.client_id,
                round_num=task.round_num,
                phase=phase,
                message=(
                    f"straggler: needed {seconds:.4g}s of simulated time, past the "
                    f"{deadline:.4g}s deadline"
                ),
            )
        self._phase_s[phase] = max(self._phase_s.get(phase, 0.0), seconds)
        return outcome

    def close(self) -> None:
        """Close the inner transport."""
        self._inner.close()


def _epochs(task: TrainTask, default: float) -> float:
    """Return the local epochs `task` asks for: its config's "epochs", else `default`."""
    epochs = task.config.get("epochs", default)
    is_number = isinstance(epochs, int | float) and not isinstance(epochs, bool)
    return float(epochs) if is_number else default
