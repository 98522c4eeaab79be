"""Run simulated clients on a Ray cluster (optional extra: `pip install 'federa[ray]'`).

Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications" (OSDI 2018).
Clients run in long-lived Ray actors, each holding the resources one client needs
(CPUs, a fraction of a GPU): an actor builds the client function once and, since
federa's `TorchClient` shares one model per process, reuses one model for every client
it runs. Per-client state (SCAFFOLD's c_i, ...) stays with the `InProcessTransport`
on the driver, so any actor can run any client.

Results stream back in task order with a bounded number of tasks in flight, so the
round loop aggregates each one as it arrives; the global arrays are put into Ray's
object store once per round, not once per task. Given a seed, a Ray run gives the same
History as a serial one.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from federa.client.runner import ClientFn, run_client_task
from federa.core.arrays import Arrays
from federa.core.messages import Failure, Task, TaskResult, TrainResult
from federa.errors import ConfigError, TransportError

logger = logging.getLogger(__name__)

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "the Ray executor needs Ray; install it with: pip install 'federa[ray]'"
        ) from None
    return ray


def _own(arrays: Arrays) -> Arrays:
    """Return writable copies of `arrays` that do not refer to Ray's object store."""
    return Arrays((name, np.array(a, copy=True)) for name, a in arrays.items())


class ClientActor:
    """A Ray actor that runs client tasks with one client function (and model) for life.

    Args:
        payload: The client function, serialized with Ray's cloudpickle.
        num_threads: Intra-op threads for numeric libraries in this actor.
    """

    def __init__(self, payload: bytes, num_threads: int) -> None:
        # Fix the thread count before unpickling the client function imports torch.
        for var in _THREAD_VARS:
            os.environ[var] = str(num_threads)
        from ray import cloudpickle

        self._client_fn: ClientFn = cloudpickle.loads(payload)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(num_threads)

    def run(self, task: Task, arrays: Arrays) -> TaskResult:
        """Run `task` with `arrays` (sent once per round through the object store)."""
        # Arrays read from the object store are read-only views; clients get their own.
        return run_client_task(self._client_fn, replace(task, arrays=_own(arrays)))


class RayExecutor:
    """Run client tasks in Ray actors, locally or on an existing Ray cluster.

    Args:
        address: Address of a running Ray cluster ("auto", "ray://host:10001", ...);
            None starts a local Ray instance (or uses the one this process started).
        num_cpus: CPUs of the local instance (None: all of this machine's); only with
            no address.
        num_cpus_per_client: CPUs each client's actor requests (> 0).
        num_gpus_per_client: GPUs each client's actor requests; a fraction such as 0.25
            packs four clients on one GPU.
        num_actors: Actors to start; None fits as many as the cluster's resources hold.
        max_in_flight: Most tasks submitted but not yet handed back (default twice the
            actors).
        threads_per_client: Intra-op threads in each actor (default 1, as in
            `ProcessExecutor`, so that results match a serial run bit for bit).
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        num_cpus_per_client: float = 1.0,
        num_gpus_per_client: float = 0.0,
        num_actors: int | None = None,
        max_in_flight: int | None = None,
        threads_per_client: int = 1,
    ) -> None:
        if address is not None and num_cpus is not None:
            raise ConfigError(
                "num_cpus sizes a local Ray instance; leave it unset when connecting to "
                f"the cluster at {address}"
            )
        if num_cpus is not None and num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {num_cpus}")
        if not (math.isfinite(num_cpus_per_client) and num_cpus_per_client > 0):
            raise ConfigError(f"num_cpus_per_client must be > 0, got {num_cpus_per_client}")
        if not (math.isfinite(num_gpus_per_client) and num_gpus_per_client >= 0):
            raise ConfigError(f"num_gpus_per_client must be >= 0, got {num_gpus_per_client}")
        for name, value in (
            ("num_actors", num_actors),
            ("max_in_flight", max_in_flight),
            ("threads_per_client", threads_per_client),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.address = address
        self.num_cpus = num_cpus
        self.num_cpus_per_client = num_cpus_per_client
        self.num_gpus_per_client = num_gpus_per_client
        self.num_actors = num_actors
        self.max_in_flight = max_in_flight
        self.threads_per_client = threads_per_client
        self._ray: Any = None
        self._started_ray = False
        self._actors: list[Any] = []
        self._client_fn: ClientFn | None = None

    def _connect(self) -> Any:
        ray = self._ray or _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
            if self.address is not None:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConfigError(
                    f"cannot connect to the Ray cluster at {self.address}: {exc}; check "
                    "--ray-address (ray status shows it on the head node)"
                ) from None
            self._started_ray = True
        self._ray = ray
        return ray

    def _fit_actors(self, ray: Any) -> int:
        if self.num_actors is not None:
            return self.num_actors
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 0) // self.num_cpus_per_client)
        if self.num_gpus_per_client > 0:
            fits = min(fits, int(resources.get("GPU", 0) // self.num_gpus_per_client))
        if fits < 1:
            raise ConfigError(
                f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and "
                f"{resources.get('GPU', 0):g} GPUs, too few for one client asking for "
                f"{self.num_cpus_per_client:g} CPUs and {self.num_gpus_per_client:g} GPUs; "
                "lower the per-client resources or add nodes"
            )
        return fits

    def _ensure_actors(self, client_fn: ClientFn) -> list[Any]:
        if self._actors and self._client_fn is client_fn:
            return self._actors
        self._kill_actors()
        ray = self._connect()
        from ray import cloudpickle

        try:
            payload = cloudpickle.dumps(client_fn)
        except Exception as exc:  # cloudpickle raises many types for what it cannot ship
            raise ConfigError(
                f"client_fn cannot be serialized to run on Ray actors: {exc}"
            ) from None
        actor_cls = ray.remote(ClientActor).options(
            num_cpus=self.num_cpus_per_client, num_gpus=self.num_gpus_per_client
        )
        count = self._fit_actors(ray)
        self._actors = [actor_cls.remote(payload, self.threads_per_client) for _ in range(count)]
        self._client_fn = client_fn
        logger.info("started %d Ray actors for clients", count)
        return self._actors

    def run(self, client_fn: ClientFn, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Yield `(index, result)` in task order, keeping at most `max_in_flight` submitted.

        Each task goes to the actor with the fewest tasks outstanding.
        """
        actors = self._ensure_actors(client_fn)
        ray = self._ray
        limit = self.max_in_flight or 2 * len(actors)
        refs: dict[int, Any] = {}  # id(arrays) -> object ref, one put per distinct arrays
        load = [0] * len(actors)
        pending: deque[tuple[int, Any, int]] = deque()
        submitted = 0
        try:
            while submitted < len(tasks) or pending:
                while submitted < len(tasks) and len(pending) < limit:
                    task = tasks[submitted]
                    ref = refs.get(id(task.arrays))
                    if ref is None:
                        ref = refs[id(task.arrays)] = ray.put(task.arrays)
                    slot = load.index(min(load))
                    light = replace(task, arrays=Arrays())
                    pending.append((submitted, actors[slot].run.remote(light, ref), slot))
                    load[slot] += 1
                    submitted += 1
                index, future, slot = pending.popleft()
                load[slot] -= 1
                yield index, self._outcome(ray, future, tasks[index])
        finally:
            for _, future, _ in pending:  # the consumer stopped early
                ray.cancel(future)

    def _outcome(self, ray: Any, future: Any, task: Task) -> TaskResult:
        try:
            result: TaskResult = ray.get(future)
        except ray.exceptions.RayActorError:
            self.close()
            raise TransportError(
                "a Ray actor running clients died (out of memory or killed); give each "
                "client more resources (num_cpus_per_client) or run fewer at a time"
            ) from None
        except Exception as exc:  # e.g. a result that cannot be serialized back
            return Failure(
                client_id=task.client_id,
                round_num=task.round_num,
                phase=task.phase,
                message=f"{type(exc).__name__}: {exc}",
            )
        if isinstance(result, TrainResult):
            # Arrays come back as read-only views into Ray's object store, which close()
            # shuts down; own copies outlive it, as every other executor's results do.
            state = None if result.state is None else _own(result.state)
            return replace(result, arrays=_own(result.arrays), state=state)
        return result

    def _kill_actors(self) -> None:
        if self._ray is not None:
            for actor in self._actors:
                self._ray.kill(actor)
        self._actors = []
        self._client_fn = None

    def close(self) -> None:
        """Stop the actors, and the local Ray instance if this executor started it."""
        self._kill_actors()
        if self._started_ray and self._ray is not None:
            self._ray.shutdown()
            self._started_ray = False
