"""GrpcServer + GrpcTransport in-process, with well-behaved `connect()` clients and a
hand-rolled raw client that breaks the protocol in every way we can think of."""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest

import federa as fd
from federa.core.messages import Failure, Task, TrainResult, TrainTask
from federa.errors import TransportError
from federa.server.history import RoundRecord
from federa.server.loop import run_round
from federa.transport.grpc import codec, connect
from federa.transport.grpc._proto import federa_pb2 as pb
from federa.transport.grpc.server import GrpcServer, GrpcTransport

TIMEOUT_S = 10.0  # for waits that normally take milliseconds
INITIAL = fd.Arrays(
    {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([0.5, -1], np.float32)}
)
SHIFTED = fd.Arrays({k: v + 1 for k, v in INITIAL.items()})  # what ShiftClient(1) returns


class ShiftClient(fd.Client):
    """Returns the arrays plus `shift`; sleeps `sleep_s` in the rounds listed."""

    def __init__(self, shift: float = 1.0, sleep_s: float = 0.0, slow_rounds: tuple[int, ...] = ()):
        self.shift, self.sleep_s, self.slow_rounds = shift, sleep_s, slow_rounds

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        if config["round_num"] in self.slow_rounds:
            time.sleep(self.sleep_s)
        shifted = fd.Arrays({k: v + self.shift for k, v in arrays.items()})
        return fd.TrainResult(arrays=shifted, num_examples=10)

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=self.shift, num_examples=1)


def wire(messages: Iterator[Any]) -> list[bytes]:
    return [codec.serialize(m) for m in messages]


def train_result(task_id: int, arrays: fd.Arrays) -> list[bytes]:
    return wire(codec.encode_result(task_id, TrainResult(arrays=arrays, num_examples=10)))


Respond = Callable[[int, Task], list[bytes]]


class RawClient:
    """A client speaking raw bytes on its own channel; answers each task with `respond`."""

    def __init__(self, port: int, hello: bytes, respond: Respond | None = None) -> None:
        # Its own TCP connection, so closing it cannot touch the other clients' streams.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.respond = respond
        self.outbox: queue.Queue[bytes | None] = queue.Queue()
        self.outbox.put(hello)
        self.welcome: codec.Welcome | None = None
        self.welcomed = threading.Event()
        self.tasks: list[tuple[int, Task]] = []
        self.error: grpc.RpcError | None = None
        self.shutdown: str | None = None
        self.done = threading.Event()
        join = self.channel.stream_stream(
            codec.JOIN_METHOD,
            request_serializer=lambda b: b,
            response_deserializer=codec.parse_server_message,
        )
        self.responses = join(self._requests())
        self.reader = threading.Thread(target=self._read, name="raw-client", daemon=True)
        self.reader.start()

    def _requests(self) -> Iterator[bytes]:
        while (data := self.outbox.get()) is not None:
            yield data

    def _read(self) -> None:
        decoder: codec.TaskDecoder | None = None
        try:
            for message in self.responses:
                if decoder is None:
                    self.welcome = codec.decode_welcome(message)
                    decoder = codec.TaskDecoder(self.welcome.client_id)
                    self.welcomed.set()
                elif codec.message_kind(message) == "shutdown":
                    self.shutdown = codec.decode_shutdown(message)
                elif (done := decoder.feed(message)) is not None:
                    self.tasks.append(done)
                    if self.respond is not None:
                        for data in self.respond(*done):
                            self.outbox.put(data)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def send(self, *data: bytes) -> None:
        for d in data:
            self.outbox.put(d)

    def refusal(self) -> tuple[grpc.StatusCode, str]:
        assert self.done.wait(TIMEOUT_S), "the server neither answered nor closed the stream"
        assert self.error is not None, "the stream was not refused"
        return self.error.code(), str(self.error.details())

    def close(self) -> None:
        self.outbox.put(None)
        self.channel.close()
        self.reader.join(TIMEOUT_S)
        assert not self.reader.is_alive()


@dataclass
class Deployment:
    transport: GrpcTransport
    server: GrpcServer
    connected: list[tuple[threading.Thread, list[Any]]] = field(default_factory=list)
    raws: list[RawClient] = field(default_factory=list)
    is_stopped: bool = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def connect(self, client: fd.Client, client_id: int | None) -> list[Any]:
        """Run `connect()` in a thread; returns a list that receives its outcome."""
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(connect(client, self.address, client_id=client_id, name="good"))
            except Exception as exc:  # kept for the test to look at, not raised in a thread
                outcome.append(exc)

        thread = threading.Thread(target=run, name=f"connect-{client_id}", daemon=True)
        thread.start()
        self.connected.append((thread, outcome))
        return outcome

    def raw(
        self,
        respond: Respond | None = None,
        *,
        client_id: int = 1,
        version: int = codec.PROTOCOL_VERSION,
        hello: bytes | None = None,
    ) -> RawClient:
        if hello is None:
            message = pb.Hello(protocol_version=version, client_id=client_id, name="raw")
            hello = codec.serialize(pb.ClientMessage(hello=message))
        raw = RawClient(self.server.port, hello, respond)
        self.raws.append(raw)
        return raw

    def wait_for(self, ids: list[int]) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while sorted(self.transport.available_clients()) != ids:
            assert time.monotonic() < deadline, f"{self.transport.available_clients()} != {ids}"
            time.sleep(0.01)

    def round(
        self, round_num: int = 1, arrays: fd.Arrays = INITIAL, min_clients: int = 1
    ) -> tuple[fd.Arrays, RoundRecord]:
        strategy = fd.FedAvg(min_train_clients=min_clients)
        return run_round(strategy, self.transport, arrays, round_num, seed=0)

    def stop(self) -> None:
        if self.is_stopped:
            return
        self.is_stopped = True
        try:
            for raw in self.raws:
                raw.close()
        finally:
            self.server.stop(grace=1.0)
        for thread, outcome in self.connected:
            thread.join(TIMEOUT_S)
            assert not thread.is_alive(), "a connect() client did not end with the run"
            assert outcome, "a connect() client ended without an outcome"


@pytest.fixture
def deploy() -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []

    def make(round_timeout: float | None = TIMEOUT_S, **kwargs: Any) -> Deployment:
        transport = GrpcTransport(round_timeout=round_timeout, **kwargs)
        deployment = Deployment(transport, GrpcServer("127.0.0.1:0", transport))
        made.append(deployment)
        return deployment

    try:
        yield make
    finally:
        for deployment in made:
            deployment.stop()


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="federa")


def logged(
    caplog: pytest.LogCaptureFixture,
    *parts: str,
    timeout: float = TIMEOUT_S,
    ignore: str = "connected from",
) -> str:
    """Wait for a federa log line containing every part (and not `ignore`); return it."""
    deadline = time.monotonic() + timeout
    while True:
        for record in list(caplog.records):
            text = record.getMessage()
            if ignore in text or not record.name.startswith("federa"):
                continue
            if all(p in text for p in parts):
                return text
        assert time.monotonic() < deadline, f"no log line with {parts}"
        time.sleep(0.01)


def assert_only_good_result_counts(arrays: fd.Arrays, rec: RoundRecord) -> Failure:
    """Client 0 (good) answered, client 1 (raw) failed; return that failure."""
    assert rec.num_sampled == 2
    assert rec.num_results == 1
    assert rec.is_accepted
    assert arrays.equals(SHIFTED), "the good client's result was not the aggregate"
    (failure,) = rec.failures
    assert (failure.client_id, failure.round_num, failure.phase) == (1, 1, "train")
    return failure


# ---- well-behaved clients ----------------------------------------------------------------


def test_connected_clients_train_and_the_run_ends_cleanly(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy()
    outcomes = [d.connect(ShiftClient(shift=float(2 * i + 1)), client_id=i) for i in range(3)]
    d.wait_for([0, 1, 2])
    arrays, rec = d.round(min_clients=3)
    assert (rec.num_sampled, rec.num_results, rec.failures) == (3, 3, [])
    # Equal weights: the mean shift of 1, 3 and 5 is 3.
    assert arrays.equals(fd.Arrays({k: v + 3 for k, v in INITIAL.items()}))
    d.stop()
    assert [o[0] for o in outcomes] == ["the run is complete"] * 3


def test_the_server_chooses_an_id_when_asked(deploy: Callable[..., Deployment]) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=5)
    d.wait_for([5])
    d.connect(ShiftClient(), client_id=None)
    d.wait_for([0, 5])


def test_a_client_that_connects_mid_run_joins_later_cohorts(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    d.connect(ShiftClient(), client_id=1)
    d.wait_for([0, 1])
    arrays, rec = d.round(round_num=1)
    assert (rec.num_sampled, rec.num_results) == (2, 2)
    d.connect(ShiftClient(shift=4.0), client_id=2)
    d.wait_for([0, 1, 2])
    arrays, rec = d.round(round_num=2, arrays=arrays)
    assert (rec.num_sampled, rec.num_results, rec.failures) == (3, 3, [])
    # Round 1 added 1; round 2 the mean of 1, 1 and 4.
    assert arrays.equals(fd.Arrays({k: v + 3 for k, v in INITIAL.items()}))


def test_a_client_that_disconnects_is_dropped(
    deploy: Callable[..., Deployment], caplog: pytest.LogCaptureFixture
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    raw = d.raw(client_id=1)
    d.wait_for([0, 1])
    raw.close()
    d.wait_for([0])
    logged(caplog, "client 1 disconnected")
    arrays, rec = d.round()
    assert (rec.num_sampled, rec.num_results, rec.failures) == (1, 1, [])
    assert arrays.equals(SHIFTED)


def test_a_client_that_disconnects_mid_task_fails_at_once(
    deploy: Callable[..., Deployment], caplog: pytest.LogCaptureFixture
) -> None:
    d = deploy(round_timeout=60.0)
    d.connect(ShiftClient(), client_id=0)
    holder: list[RawClient] = []

    def hang_up(task_id: int, task: Task) -> list[bytes]:
        threading.Thread(target=holder[0].channel.close).start()
        return []

    holder.append(d.raw(hang_up, client_id=1))
    d.wait_for([0, 1])
    start = time.monotonic()
    arrays, rec = d.round(min_clients=2)
    assert time.monotonic() - start < TIMEOUT_S, "the round waited for the deadline"
    failure = assert_only_good_result_counts(arrays, rec)
    assert "deadline" not in failure.message
    assert d.transport.available_clients() == [0]
    logged(caplog, "client 1 disconnected")


def test_a_straggler_fails_at_the_deadline_and_its_late_result_is_ignored(
    deploy: Callable[..., Deployment], caplog: pytest.LogCaptureFixture
) -> None:
    d = deploy(round_timeout=1.0)
    d.connect(ShiftClient(), client_id=0)
    d.connect(ShiftClient(sleep_s=2.0, slow_rounds=(1,)), client_id=1)
    d.wait_for([0, 1])
    start = time.monotonic()
    arrays, rec = d.round(round_num=1, min_clients=2)
    assert time.monotonic() - start < 1.9, "the round did not end at its deadline"
    failure = assert_only_good_result_counts(arrays, rec)
    assert failure.message == "no result within the round deadline of 1s"
    logged(caplog, "client 1 missed the round deadline")
    logged(caplog, "client 1: result for task", "after the round deadline; ignored")
    # Its stream survived: it is still connected and answers the next round in time.
    assert d.transport.available_clients() == [0, 1]
    arrays, rec = d.round(round_num=2, arrays=arrays, min_clients=2)
    assert (rec.num_results, rec.failures) == (2, [])
    assert arrays.equals(fd.Arrays({k: v + 1 for k, v in SHIFTED.items()}))


def test_results_are_received_into_earlier_results_of_the_last_cohort_only(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    d.connect(ShiftClient(), client_id=1)
    d.wait_for([0, 1])

    def train(*ids: int) -> dict[int, Any]:
        tasks = [TrainTask(round_num=1, client_id=i, arrays=INITIAL) for i in ids]
        return dict(d.transport.run(tasks))

    first = train(0, 1)
    alive = {cid: [weakref.ref(a) for a in r.arrays.values()] for cid, r in first.items()}
    del first
    second = train(0)
    assert second[0].arrays.equals(SHIFTED)
    reused = [r() is a for r, a in zip(alive[0], second[0].arrays.values(), strict=True)]
    assert reused == [True, True], "client 0's second result got fresh arrays"
    assert [r() for r in alive[1]] == [None, None], "an idle client's arrays were kept"


# ---- a raw client that breaks the protocol ------------------------------------------------


def wrong_shape(task_id: int, task: Task) -> list[bytes]:
    return train_result(task_id, fd.Arrays({"w": np.zeros(7, np.float32), "b": task.arrays["b"]}))


def wrong_dtype(task_id: int, task: Task) -> list[bytes]:
    return train_result(
        task_id, fd.Arrays({k: v.astype(np.float64) for k, v in task.arrays.items()})
    )


def with_nan(task_id: int, task: Task) -> list[bytes]:
    arrays = {k: v.copy() for k, v in task.arrays.items()}
    arrays["w"][1, 1] = np.nan
    return train_result(task_id, fd.Arrays(arrays))


def with_inf(task_id: int, task: Task) -> list[bytes]:
    arrays = {k: v.copy() for k, v in task.arrays.items()}
    arrays["b"][0] = -np.inf
    return train_result(task_id, fd.Arrays(arrays))


def someone_elses_task(task_id: int, task: Task) -> list[bytes]:
    return train_result(task_id + 1000, task.arrays)


def huge_declared_size(task_id: int, task: Task) -> list[bytes]:
    header, *chunks = codec.encode_result(task_id, TrainResult(arrays=task.arrays, num_examples=1))
    header.result.train.arrays[0].num_bytes = 10**15
    return wire(iter([header, *chunks]))


def too_many_bytes(task_id: int, task: Task) -> list[bytes]:
    """The last chunk carries 4 bytes more than the last array holds."""
    header, *chunks = codec.encode_result(task_id, TrainResult(arrays=task.arrays, num_examples=1))
    last = codec.parse_client_message(codec.serialize(chunks[-1]))
    assert isinstance(last, codec.Chunk)
    longer = codec.Chunk(task_id=last.task_id, offset=last.offset, data=bytes(last.data) + bytes(4))
    return wire(iter([header, *chunks[:-1], longer]))


def chunk_first(task_id: int, task: Task) -> list[bytes]:
    header, *chunks = train_result(task_id, task.arrays)
    return [*chunks, header]


def eval_for_train(task_id: int, task: Task) -> list[bytes]:
    return wire(codec.encode_result(task_id, fd.EvalResult(loss=0.0, num_examples=1)))


def malformed(task_id: int, task: Task) -> list[bytes]:
    return [b"\xff\xff\xff\xff not protobuf"]


def over_grpc_limit(task_id: int, task: Task) -> list[bytes]:
    data = b"\x00" * (codec.MAX_MESSAGE_BYTES + 1024)
    return [codec.serialize(pb.ClientMessage(chunk=pb.Chunk(task_id=task_id, data=data)))]


def second_hello(task_id: int, task: Task) -> list[bytes]:
    return [codec.serialize(codec.encode_hello(1, "again"))]


BAD_MESSAGE = "client 1 sent a bad message"
DROPPED = "client 1 disconnected: "
REFUSED = "client 1: result arrays contain NaN or Inf; refused"
# (respond, what the failure says, what the server logs, whether the stream survives)
MISBEHAVIOURS = [
    pytest.param(wrong_shape, "protocol error: result for task", BAD_MESSAGE, False, id="shape"),
    pytest.param(wrong_dtype, "other shapes or dtypes", BAD_MESSAGE, False, id="dtype"),
    pytest.param(someone_elses_task, "was not given", BAD_MESSAGE, False, id="not-given"),
    pytest.param(huge_declared_size, "declares 1000000000000000", BAD_MESSAGE, False, id="huge"),
    pytest.param(too_many_bytes, "does not fit array 1", BAD_MESSAGE, False, id="too-long"),
    pytest.param(chunk_first, "result that was not announced", BAD_MESSAGE, False, id="chunk"),
    pytest.param(second_hello, "unexpected hello message", BAD_MESSAGE, False, id="hello"),
    pytest.param(malformed, "", DROPPED, False, id="malformed-bytes"),
    pytest.param(over_grpc_limit, "", DROPPED, False, id="over-grpc-message-limit"),
    pytest.param(with_nan, "result arrays contain NaN or Inf", REFUSED, True, id="nan"),
    pytest.param(with_inf, "result arrays contain NaN or Inf", REFUSED, True, id="inf"),
    pytest.param(
        eval_for_train,
        "answered a training task with an evaluation result",
        "client 1",
        True,
        id="eval-for-train",
    ),
]


@pytest.mark.parametrize(("respond", "says", "log", "stays"), MISBEHAVIOURS)
def test_a_misbehaving_client_fails_alone(
    deploy: Callable[..., Deployment],
    caplog: pytest.LogCaptureFixture,
    respond: Respond,
    says: str,
    log: str,
    stays: bool,
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    raw = d.raw(respond, client_id=1)
    d.wait_for([0, 1])
    start = time.monotonic()
    arrays, rec = d.round(min_clients=2)
    assert time.monotonic() - start < TIMEOUT_S / 2, "the round waited for the deadline"
    failure = assert_only_good_result_counts(arrays, rec)
    assert says in failure.message
    assert "deadline" not in failure.message
    detail = [says.removeprefix("protocol error: ")] if log == BAD_MESSAGE else []
    logged(caplog, log, *detail, timeout=1.0)
    if stays:
        assert d.transport.available_clients() == [0, 1]
        assert not raw.done.is_set()
    else:
        d.wait_for([0])
        logged(caplog, DROPPED)
        assert raw.done.wait(TIMEOUT_S), "the misbehaving client's stream stayed open"
    # The server keeps serving, and the good client trains on.
    arrays, rec = d.round(round_num=2, arrays=arrays)
    assert rec.num_results == 1
    assert len(rec.failures) == int(stays)  # a client that stayed misbehaves again
    assert arrays.equals(fd.Arrays({k: v + 1 for k, v in SHIFTED.items()}))


def test_a_malformed_message_ends_the_stream_with_a_grpc_error(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy()
    raw = d.raw(malformed, client_id=1)
    d.wait_for([1])
    d.connect(ShiftClient(), client_id=0)
    d.wait_for([0, 1])
    d.round(min_clients=2)
    code, details = raw.refusal()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ClientMessage" in details


def test_a_message_over_the_grpc_limit_is_refused(deploy: Callable[..., Deployment]) -> None:
    d = deploy()
    raw = d.raw(over_grpc_limit, client_id=1)
    d.connect(ShiftClient(), client_id=0)
    d.wait_for([0, 1])
    d.round(min_clients=2)
    code, details = raw.refusal()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in details


def test_a_result_with_an_unknown_dtype_is_a_protocol_error(
    deploy: Callable[..., Deployment],
) -> None:
    def unknown_dtype(task_id: int, task: Task) -> list[bytes]:
        header, *chunks = codec.encode_result(
            task_id, TrainResult(arrays=task.arrays, num_examples=1)
        )
        header.result.train.arrays[0].dtype = "no-such-dtype"
        return wire(iter([header, *chunks]))

    d = deploy(round_timeout=2.0)
    d.connect(ShiftClient(), client_id=0)
    d.raw(unknown_dtype, client_id=1)
    d.wait_for([0, 1])
    arrays, rec = d.round(min_clients=2)
    failure = assert_only_good_result_counts(arrays, rec)
    assert "protocol error" in failure.message
    d.wait_for([0])


# ---- clients refused at the door ----------------------------------------------------------


def test_another_protocol_version_is_refused(
    deploy: Callable[..., Deployment], caplog: pytest.LogCaptureFixture
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    d.wait_for([0])
    raw = d.raw(client_id=1, version=codec.PROTOCOL_VERSION + 1)
    code, details = raw.refusal()
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"client speaks federa protocol {codec.PROTOCOL_VERSION + 1}" in details
    assert f"this server speaks {codec.PROTOCOL_VERSION}" in details
    assert "install the same federa version" in details
    line = logged(caplog, "refused a client from", "127.0.0.1", "protocol")
    assert details in line
    assert d.transport.available_clients() == [0]
    assert d.round()[1].num_results == 1


def test_a_duplicate_client_id_is_refused(
    deploy: Callable[..., Deployment], caplog: pytest.LogCaptureFixture
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    d.wait_for([0])
    raw = d.raw(client_id=0)
    code, details = raw.refusal()
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "client id 0 is already connected" in details
    logged(caplog, "refused a client", "client id 0 is already connected")
    # connect() does not retry a refusal that retrying cannot fix.
    outcome = d.connect(ShiftClient(), client_id=0)
    deadline = time.monotonic() + TIMEOUT_S
    while not outcome:
        assert time.monotonic() < deadline, "connect() kept retrying a refused id"
        time.sleep(0.01)
    assert isinstance(outcome[0], TransportError)
    assert "already connected" in str(outcome[0])
    # The first client with that id is unaffected.
    assert d.transport.available_clients() == [0]
    arrays, rec = d.round()
    assert (rec.num_results, rec.failures) == (1, [])
    assert arrays.equals(SHIFTED)


@pytest.mark.parametrize(
    ("first", "code"),
    [
        pytest.param(b"\xff\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, id="malformed"),
        pytest.param(
            codec.serialize(pb.ClientMessage(result=pb.ResultHeader(task_id=1, failure="x"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            id="result",
        ),
        pytest.param(b"", grpc.StatusCode.INVALID_ARGUMENT, id="empty"),
    ],
)
def test_a_stream_that_does_not_start_with_a_hello_is_refused(
    deploy: Callable[..., Deployment], first: bytes, code: grpc.StatusCode
) -> None:
    d = deploy()
    d.connect(ShiftClient(), client_id=0)
    d.wait_for([0])
    raw = d.raw(hello=first)
    got, details = raw.refusal()
    assert got == code
    if first.startswith(b"\xff"):
        assert "malformed ClientMessage" in details
    else:
        assert "the first message of a stream must be a Hello" in details
    assert d.transport.available_clients() == [0]
    assert d.round()[1].num_results == 1


def test_a_config_the_codec_cannot_encode_fails_in_the_round_not_the_stream(
    deploy: Callable[..., Deployment],
) -> None:
    d = deploy()
    raw = d.raw(client_id=0)
    d.wait_for([0])
    strategy = fd.FedAvg(min_train_clients=1, train_config={"epochs": [2]})  # type: ignore[dict-item]
    try:  # raising in the round loop, or a Failure that says why, would both do
        _, rec = run_round(strategy, d.transport, INITIAL, 1, seed=0)
        (failure,) = rec.failures
        problem = failure.message
    except codec.CodecError as exc:
        problem = str(exc)
    assert "'epochs'" in problem
    time.sleep(0.2)
    assert not raw.done.is_set(), f"the client's stream was aborted: {raw.error}"
    assert d.transport.available_clients() == [0]
