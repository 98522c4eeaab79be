"""`SecAggPlusClient`: any client, taking part in SecAgg+ secure aggregation.

The wrapper answers the four SecAgg+ stages (see `federa.privacy.secagg`) and passes
every other task to the client it wraps, so a deployed client can always be wrapped:
it then works with servers that run secure aggregation and servers that do not.
"""

from __future__ import annotations

import functools

from federa.client.base import Client
from federa.client.runner import ClientFn
from federa.core.arrays import Arrays
from federa.core.messages import Config, EvalResult, TrainResult
from federa.privacy.secagg import participant, wire
from federa.privacy.secagg.participant import State


class SecAggPlusClient(Client):
    """Wrap `client` so that it can take part in secure aggregation.

    In the setup stage the wrapped client's `fit` trains as usual; its arrays never
    leave this process in the clear: only their clipped, weighted, masked encoding does.
    Its training metrics are aggregated securely too. The protocol's secrets live in
    `state` under the "secagg." prefix, next to the wrapped client's own state.

    Args:
        client: The client that trains and evaluates.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._secagg = Arrays()

    @property
    def state(self) -> Arrays:
        """Return the wrapped client's state followed by the protocol's."""
        return Arrays({**self.client.state, **self._secagg})

    @state.setter
    def state(self, value: Arrays) -> None:
        own = {k: v for k, v in value.items() if not k.startswith(wire.PREFIX)}
        self.client.state = Arrays(own)
        self._secagg = Arrays({k: v for k, v in value.items() if k.startswith(wire.PREFIX)})

    def fit(self, arrays: Arrays, config: Config) -> TrainResult:
        """Run a SecAgg+ stage, or pass an ordinary training task to the wrapped client."""
        stage = wire.stage_of(config)
        if stage is None:
            return self.client.fit(arrays, config)
        round_num, seed = _int(config, "round_num"), _int(config, "seed")
        client_id = _int(config, wire.CLIENT_ID)
        state = State.from_arrays(self._secagg)
        if stage == wire.SETUP:
            result = self.client.fit(arrays, wire.strip_config(config))
            reply, new = participant.setup(client_id, round_num, arrays, result, config, seed)
            self._secagg = new.to_arrays()
        elif stage == wire.SHARE:
            reply, new = participant.share(state, round_num, arrays, config)
            self._secagg = new.to_arrays()
        elif stage == wire.MASK:
            reply, new = participant.mask(state, round_num, arrays, config)
            self._secagg = new.to_arrays()
        else:
            reply, self._secagg = participant.unmask(state, round_num, arrays)
        return TrainResult(arrays=reply, num_examples=0)

    def evaluate(self, arrays: Arrays, config: Config) -> EvalResult:
        """Evaluate with the wrapped client."""
        return self.client.evaluate(arrays, config)


def _int(config: Config, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wire.MalformedError(f"a SecAgg+ task's config lacks the integer {key!r}")
    return value


def _build(client_fn: ClientFn, cid: int) -> SecAggPlusClient:
    return SecAggPlusClient(client_fn(cid))


def with_secagg(client_fn: ClientFn) -> ClientFn:
    """Return a client_fn that wraps every client `client_fn` builds in `SecAggPlusClient`.

    The result pickles whenever `client_fn` does (for worker processes).
    """
    return functools.partial(_build, client_fn)
