"""The gRPC side of the server: connected clients as a `Transport`.

Each client keeps one bidirectional `Join` stream open. The server pushes task headers
and array chunks, lazily, through a per-client outbox; a reader thread per client
assembles results and hands them to the round in progress. A client that disconnects
is dropped from sampling and its unfinished tasks fail at once; a task not answered
within the round deadline fails and its late result is ignored.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from federa.core.messages import (
    PROTOCOL_KEY,
    Failure,
    Phase,
    Task,
    TaskResult,
    TrainResult,
    TrainTask,
)
from federa.errors import TransportError
from federa.transport.grpc import codec
from federa.transport.grpc.pool import ArrayPool, keep_freed_heap

logger = logging.getLogger(__name__)

SERVER_OPTIONS = [
    ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
]


class RefusedError(Exception):
    """A client may not join; carries the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Record:
    """A task in flight: what is needed to check its result, without its arrays."""

    client_id: int
    round_num: int
    phase: Phase
    specs: Sequence[Any]
    is_expired: bool = False


@dataclass(frozen=True, slots=True)
class _Abort:
    """Outbox item: end the client's stream with this status (from the reader thread)."""

    code: grpc.StatusCode
    message: str


@dataclass(slots=True, eq=False)
class _Connection:
    client_id: int
    name: str
    peer: str
    outbox: queue.Queue[Iterator[Any] | _Abort | None] = field(default_factory=queue.Queue)
    pending: dict[int, _Record] = field(default_factory=dict)
    is_open: bool = True
    # Receive buffers: the arrays of its last training result (see ArrayPool).
    pool: ArrayPool = field(default_factory=ArrayPool)


class GrpcTransport:
    """Clients connected over gRPC, seen by the round loop as a `Transport`.

    Args:
        round_timeout: Seconds a round waits for results; a client that has not
            answered by then gets a Failure (None waits for every result).
        max_result_bytes: Largest arrays a client may declare in a result.
    """

    def __init__(
        self, *, round_timeout: float | None = None, max_result_bytes: int = 1 << 40
    ) -> None:
        self.round_timeout = round_timeout
        self.max_result_bytes = max_result_bytes
        self.run_id = uuid.uuid4().hex
        self._lock = threading.Condition()
        self._clients: dict[int, _Connection] = {}
        self._results: queue.Queue[tuple[int, int, TaskResult]] = queue.Queue()
        self._task_ids = itertools.count(1)
        self._is_closed = False

    # ---- the servicer's side ----

    def register(self, hello: codec.Hello, peer: str) -> _Connection:
        """Admit a client after its Hello; raise RefusedError if it may not join."""
        if hello.protocol_version != codec.PROTOCOL_VERSION:
            raise RefusedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"client speaks federa protocol {hello.protocol_version}, this server "
                f"speaks {codec.PROTOCOL_VERSION}; install the same federa version on both",
            )
        with self._lock:
            if self._is_closed:
                raise RefusedError(grpc.StatusCode.UNAVAILABLE, "the run has ended")
            client_id = hello.client_id
            if client_id < 0:
                client_id = next(i for i in itertools.count() if i not in self._clients)
            if client_id in self._clients:
                raise RefusedError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"client id {client_id} is already connected; give each client its own id",
                )
            conn = _Connection(client_id=client_id, name=hello.name, peer=peer)
            self._clients[client_id] = conn
            self._lock.notify_all()
        logger.info("client %d (%s) connected from %s", client_id, hello.name or "-", peer)
        return conn

    def unregister(self, conn: _Connection, reason: str, abort: _Abort | None = None) -> None:
        """Drop a client from sampling, fail its unfinished tasks and end its stream."""
        with self._lock:
            if not conn.is_open:
                return
            conn.is_open = False
            if self._clients.get(conn.client_id) is conn:
                del self._clients[conn.client_id]
            pending, conn.pending = conn.pending, {}
        conn.outbox.put(abort)
        for task_id, record in pending.items():
            if not record.is_expired:
                self._results.put((task_id, conn.client_id, self._failure(record, reason)))
        logger.info("client %d disconnected: %s", conn.client_id, reason)

    def expected_specs(self, conn: _Connection, task_id: int) -> Sequence[Any] | None:
        """Return the array specs of a task this client was given, or None."""
        with self._lock:
            record = conn.pending.get(task_id)
            return None if record is None else record.specs

    def deliver(self, conn: _Connection, done: codec.DecodedResult) -> None:
        """Hand a client's result to the round waiting for it (late results are dropped)."""
        task_id = done.task_id
        with self._lock:
            record = conn.pending.pop(task_id, None)
        if record is None or record.is_expired:
            logger.warning(
                "client %d: result for task %d arrived after the round deadline; ignored",
                conn.client_id,
                task_id,
            )
            return
        self._results.put((task_id, conn.client_id, self._check(record, done)))

    # ---- the round loop's side (Transport) ----

    def available_clients(self) -> Sequence[int]:
        """Return the ids of the connected clients, sorted."""
        with self._lock:
            return sorted(self._clients)

    def wait_for_clients(self, count: int, timeout: float | None = None) -> None:
        """Block until at least `count` clients are connected."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while len(self._clients) < count:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TransportError(
                        f"only {len(self._clients)} of {count} clients connected within "
                        f"{timeout:g}s; start more clients or lower --min-clients"
                    )
                self._lock.wait(timeout=remaining if remaining is not None else 1.0)

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Send the tasks and yield results until all are in or the deadline passes."""
        self._release_buffers(tasks)
        outstanding: dict[int, tuple[_Connection, _Record]] = {}
        for task in tasks:
            record = _Record(
                client_id=task.client_id, round_num=task.round_num, phase=task.phase, specs=[]
            )
            try:
                record.specs = codec.array_specs(task.arrays)
                if PROTOCOL_KEY in task.config:  # a protocol step answers with its own arrays
                    record.specs = codec.ANY_SPECS
                messages = codec.encode_task(task_id := next(self._task_ids), task)
            except codec.CodecError as exc:
                yield task.client_id, self._failure(record, f"cannot send the task: {exc}")
                continue
            with self._lock:
                conn = self._clients.get(task.client_id)
                if conn is not None:
                    conn.pending[task_id] = record
            if conn is None:
                yield task.client_id, self._failure(record, "client is not connected")
                continue
            outstanding[task_id] = (conn, record)
            conn.outbox.put(messages)
        deadline = None if self.round_timeout is None else time.monotonic() + self.round_timeout
        while outstanding:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                task_id, client_id, outcome = self._results.get(timeout=remaining)
            except queue.Empty:
                break
            if outstanding.pop(task_id, None) is not None:
                yield client_id, outcome
        for task_id, (conn, record) in outstanding.items():
            with self._lock:
                # Keep only what is needed to read (and drop) the late result.
                if task_id in conn.pending:
                    conn.pending[task_id].is_expired = True
            logger.warning("client %d missed the round deadline", record.client_id)
            yield (
                record.client_id,
                self._failure(
                    record, f"no result within the round deadline of {self.round_timeout:g}s"
                ),
            )

    def close(self, reason: str = "the run is complete") -> None:
        """Tell every client the run has ended."""
        with self._lock:
            self._is_closed = True
            clients = list(self._clients.values())
        for conn in clients:
            conn.outbox.put(iter([codec.encode_shutdown(reason)]))
            conn.outbox.put(None)

    # ---- helpers ----

    def _release_buffers(self, tasks: Sequence[Task]) -> None:
        """Keep receive buffers only for the clients given training tasks this time.

        So the server holds on to at most one cohort's results between rounds, and only
        while their shapes are what that cohort trains on.
        """
        if not any(isinstance(task, TrainTask) for task in tasks):
            return
        training = {task.client_id for task in tasks}
        with self._lock:
            idle = [conn for cid, conn in self._clients.items() if cid not in training]
        for conn in idle:
            conn.pool.clear()

    @staticmethod
    def _failure(record: _Record, message: str) -> Failure:
        return Failure(
            client_id=record.client_id,
            round_num=record.round_num,
            phase=record.phase,
            message=message,
        )

    def _check(self, record: _Record, done: codec.DecodedResult) -> TaskResult:
        """Give failures their task's round and phase; refuse results of the wrong kind."""
        outcome = done.outcome
        if isinstance(outcome, Failure):
            return self._failure(record, outcome.message)
        problem = None
        if record.phase == "train" and not isinstance(outcome, TrainResult):
            problem = "answered a training task with an evaluation result"
        elif record.phase == "evaluate" and isinstance(outcome, TrainResult):
            problem = "answered an evaluation task with a training result"
        elif isinstance(outcome, TrainResult) and not done.is_finite:  # checked on arrival
            problem = "result arrays contain NaN or Inf"
        elif not np.isfinite(getattr(outcome, "loss", 0.0)):
            problem = "evaluation loss is NaN or Inf"
        if problem is None:
            return outcome
        logger.warning("client %d: %s; refused", record.client_id, problem)
        return self._failure(record, problem)


class _Servicer:
    """Handles `Join` streams: authentication, the Hello, and the two directions."""

    def __init__(
        self, transport: GrpcTransport, tokens: Mapping[int, str] | None, max_pool: int
    ) -> None:
        self.transport = transport
        self.tokens = dict(tokens) if tokens else None
        self.max_pool = max_pool

    def join(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            first = next(requests)
            if isinstance(first, codec.CodecError):
                raise first
            hello = codec.decode_hello(first)
            self._authenticate(hello, context)
            conn = self.transport.register(hello, context.peer())
        except RefusedError as exc:
            logger.warning("refused a client from %s: %s", context.peer(), exc)
            context.abort(exc.code, str(exc))
        except (codec.CodecError, StopIteration) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad opening message: {exc}")
        context.add_callback(lambda: self.transport.unregister(conn, "stream closed"))
        reader = threading.Thread(
            target=self._read, args=(conn, requests), name=f"federa-client-{conn.client_id}"
        )
        reader.daemon = True
        reader.start()
        yield codec.encode_welcome(conn.client_id, self.transport.run_id)
        while (item := conn.outbox.get()) is not None:
            if isinstance(item, _Abort):
                context.abort(item.code, item.message)
            else:
                yield from item

    def _authenticate(self, hello: codec.Hello, context: grpc.ServicerContext) -> None:
        if self.tokens is None:
            return
        metadata = dict(context.invocation_metadata())
        given = str(metadata.get("authorization", "")).removeprefix("Bearer ")
        expected = self.tokens.get(hello.client_id)
        if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise RefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"client {hello.client_id} is unknown or its token is wrong",
            )

    def _read(self, conn: _Connection, requests: Iterator[Any]) -> None:
        decoder = codec.ResultDecoder(
            conn.client_id,
            lambda task_id: self.transport.expected_specs(conn, task_id),
            self.transport.max_result_bytes,
            conn.pool,
        )
        reason, abort = "stream closed", None
        try:
            for message in requests:
                if isinstance(message, codec.CodecError):
                    raise message
                done = decoder.feed(message)
                if done is not None:
                    self.transport.deliver(conn, done)
                    del done  # hold no result arrays: the next result may reuse them
        except codec.CodecError as exc:
            reason = f"protocol error: {exc}"
            abort = _Abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            logger.warning(
                "client %d sent a bad message (%s); disconnecting it", conn.client_id, exc
            )
        except grpc.RpcError as exc:  # the stream broke
            reason = f"connection lost ({type(exc).__name__})"
        except Exception as exc:  # never let one client's bad input kill its reader silently
            reason = f"internal error reading its messages: {exc!r}"
            logger.exception("client %d: error while reading its messages", conn.client_id)
            abort = _Abort(grpc.StatusCode.INTERNAL, "the server could not read a message")
        self.transport.unregister(conn, reason, abort)


def _lenient_parse(data: bytes) -> Any:
    """Parse a client message, handing a CodecError to the reader instead of raising.

    gRPC would otherwise end the stream with its own log line that does not name the
    client; the reader logs the problem against the client and disconnects it.
    """
    try:
        return codec.parse_client_message(data)
    except codec.CodecError as exc:
        return exc


class GrpcServer:
    """A running gRPC server bound to `address`, with its transport.

    Args:
        address: "host:port"; port 0 picks a free port (see `port`).
        transport: The transport the clients join.
        credentials: TLS credentials (see tls.server_credentials), or None for plaintext.
        tokens: Per-client tokens (client id -> token) required when given.
        max_clients: Most clients connected at once (each holds a stream and a thread).
    """

    def __init__(
        self,
        address: str,
        transport: GrpcTransport,
        *,
        credentials: grpc.ServerCredentials | None = None,
        tokens: Mapping[int, str] | None = None,
        max_clients: int = 1024,
    ) -> None:
        self.transport = transport
        keep_freed_heap()
        servicer = _Servicer(transport, tokens, max_clients)
        handler = grpc.method_handlers_generic_handler(
            "federa.v1.Federa",
            {
                "Join": grpc.stream_stream_rpc_method_handler(
                    servicer.join,
                    request_deserializer=_lenient_parse,
                    response_serializer=codec.serialize,
                )
            },
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=max_clients + 4, thread_name_prefix="federa-rpc"
            ),
            handlers=[handler],
            options=SERVER_OPTIONS,
            maximum_concurrent_rpcs=max_clients,
        )
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise TransportError(
                f"cannot listen on {address}; check that it is host:port and the port is free"
            )
        self._server.start()

    def stop(self, grace: float = 2.0) -> None:
        """Tell clients the run has ended, then stop serving."""
        self.transport.close()
        self._server.stop(grace).wait()
