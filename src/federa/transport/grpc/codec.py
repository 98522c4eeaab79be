"""The federa.v1 wire format: the only module that touches generated protobuf code.

Tasks and results travel as a header message followed by `Chunk` messages holding the
arrays' raw little-endian bytes, a few MB each, so a model of any size passes under
gRPC's message limit and neither side ever holds a serialized copy of a whole model:
the sender slices chunks out of the arrays as the stream pulls them, the receiver
copies each chunk straight into preallocated arrays. Declared sizes are checked
against a limit before anything is allocated. Nothing is pickled.

Chunks carry nearly all the bytes, so they bypass protobuf's message objects, which
would copy every body three times on each side (into the message, out of it, into or
out of the wire bytes). They are written and read here as exactly the bytes protobuf
writes for `ServerMessage{chunk}` and `ClientMessage{chunk}`: the wire format is
protocol version 1 unchanged, and a peer that parses them with protobuf reads the same
values. A chunk costs one copy to send (array into wire bytes) and one to receive
(wire bytes into the array), besides gRPC's own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from federa.core.arrays import Arrays
from federa.core.messages import (
    Config,
    EvalResult,
    EvalTask,
    Failure,
    Task,
    TaskResult,
    TrainResult,
    TrainTask,
)
from federa.errors import TransportError
from federa.transport.grpc._proto import federa_pb2 as pb
from federa.transport.grpc.pool import ArrayPool

PROTOCOL_VERSION = 1
CHUNK_BYTES = 4 << 20
# gRPC message limit on both sides: one chunk plus headroom for headers and metrics.
MAX_MESSAGE_BYTES = 16 << 20
DEFAULT_MAX_ARRAYS_BYTES = 1 << 40
JOIN_METHOD = "/federa.v1.Federa/Join"

ServerMessage = pb.ServerMessage
ClientMessage = pb.ClientMessage
_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats


class CodecError(TransportError):
    """A message broke the federa.v1 protocol (malformed, out of order, oversized)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """A slice of the concatenated array bytes of a task or result: a `chunk` message.

    `data` is bytes or a flat memoryview of bytes: a view into the arrays being sent,
    serialized at once, or into the message received, copied into place at once.
    """

    task_id: int
    offset: int
    data: bytes | memoryview


def serialize(message: pb.ServerMessage | pb.ClientMessage | Chunk | bytes) -> bytes:
    """Return the wire bytes of a message (bytes are a message serialized already)."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, Chunk):
        return _serialize_chunk(message)
    data: bytes = message.SerializeToString()
    return data


def parse_client_message(data: bytes) -> pb.ClientMessage | Chunk:
    """Parse a client message, raising CodecError for malformed bytes."""
    return _parse_chunk(data) or _parse(pb.ClientMessage, data)


def parse_server_message(data: bytes) -> pb.ServerMessage | Chunk:
    """Parse a server message, raising CodecError for malformed bytes."""
    return _parse_chunk(data) or _parse(pb.ServerMessage, data)


M = TypeVar("M", pb.ClientMessage, pb.ServerMessage)


def _parse(kind: type[M], data: bytes) -> M:
    message = kind()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise CodecError(f"malformed {kind.__name__}: {exc}") from None
    return message


# ---- chunks on the wire, without protobuf objects ------------------------------------

# Tags: field number << 3 | wire type. Field 3, length-delimited, is `chunk` in both
# ServerMessage and ClientMessage and `data` in Chunk; Chunk fields 1 and 2 are varints.
_CHUNK_TAG, _TASK_ID_TAG, _OFFSET_TAG, _DATA_TAG = 0x1A, 0x08, 0x10, 0x1A
_MAX_VARINT_BYTES = 10  # a uint64


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _serialize_chunk(chunk: Chunk) -> bytes:
    # Field order and the omission of zero fields follow protobuf, so the bytes are
    # identical to SerializeToString() of the same message (a test pins this).
    size = len(chunk.data)
    fields = bytearray()
    if chunk.task_id:
        fields += bytes([_TASK_ID_TAG]) + _varint(chunk.task_id)
    if chunk.offset:
        fields += bytes([_OFFSET_TAG]) + _varint(chunk.offset)
    if size:
        fields += bytes([_DATA_TAG]) + _varint(size)
    head = bytes([_CHUNK_TAG]) + _varint(len(fields) + size) + fields
    return b"".join((head, chunk.data))  # the one copy of the body on this side


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Return the varint at `pos` and the position after it; IndexError if it is cut."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise IndexError("varint too long")


def _parse_chunk(data: bytes) -> Chunk | None:
    """Read a chunk message laid out as protobuf writes it; None for anything else.

    Anything else, valid or not (another message, fields repeated or out of order,
    unknown fields, truncation), goes to protobuf, which parses it or refuses it.
    """
    end = len(data)
    if not end or data[0] != _CHUNK_TAG:
        return None
    task_id = offset = 0
    body: bytes | memoryview = b""
    try:
        size, pos = _read_varint(data, 1)
        if pos + size != end:
            return None
        if pos < end and data[pos] == _TASK_ID_TAG:
            task_id, pos = _read_varint(data, pos + 1)
        if pos < end and data[pos] == _OFFSET_TAG:
            offset, pos = _read_varint(data, pos + 1)
        if pos < end and data[pos] == _DATA_TAG:
            size, pos = _read_varint(data, pos + 1)
            if pos + size != end:
                return None
            body, pos = memoryview(data)[pos:], end  # no copy
    except IndexError:
        return None
    if pos != end or task_id >> 64 or offset >> 64:
        return None
    return Chunk(task_id=task_id, offset=offset, data=body)


def _as_chunk(message: pb.ServerMessage | pb.ClientMessage | Chunk) -> Chunk | None:
    """Return the chunk a message carries (whichever parser read it), or None."""
    if isinstance(message, Chunk):
        return message
    if message.WhichOneof("body") != "chunk":
        return None
    c = message.chunk
    return Chunk(task_id=c.task_id, offset=c.offset, data=c.data)


# ---- arrays -------------------------------------------------------------------------


def _little_endian(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    return np.ascontiguousarray(array, dtype=dtype).reshape(-1)


def array_specs(arrays: Arrays) -> list[pb.ArraySpec]:
    """Return the wire description (name, dtype, shape, size) of every array, in order."""
    specs = []
    for name, array in arrays.items():
        if array.dtype.kind not in _DTYPE_KINDS:
            raise CodecError(f"array {name!r} has dtype {array.dtype}, which cannot be sent")
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        specs.append(
            pb.ArraySpec(
                name=name, dtype=dtype.str, shape=list(array.shape), num_bytes=array.nbytes
            )
        )
    return specs


def iter_chunks(arrays: Arrays, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, memoryview]]:
    """Yield (offset, view) slices of the arrays' bytes, lazily, without copying them.

    A slice never spans two arrays. The views read the arrays when they are serialized.
    """
    offset = 0
    for array in arrays.values():
        view = _little_endian(array).data.cast("B")
        for start in range(0, len(view), chunk_bytes):
            yield offset + start, view[start : start + chunk_bytes]
        offset += len(view)


def _chunks(task_id: int, arrays: Arrays, chunk_bytes: int) -> Iterator[bytes]:
    """Yield the chunk messages of the arrays, each serialized when the stream pulls it.

    Serialized, so the message the stream holds on to after sending the last one does
    not keep the arrays alive (and out of the receiver's `ArrayPool`).
    """
    for offset, data in iter_chunks(arrays, chunk_bytes):
        wire = _serialize_chunk(Chunk(task_id=task_id, offset=offset, data=data))
        del data
        yield wire


MAX_DIMS = 32


def _dtype(spec: pb.ArraySpec) -> np.dtype[np.generic]:
    try:
        dtype = np.dtype(spec.dtype)
    except (TypeError, ValueError):
        raise CodecError(f"array {spec.name!r} has unknown dtype {spec.dtype!r}") from None
    if dtype.kind not in _DTYPE_KINDS or dtype.byteorder == ">":
        raise CodecError(f"array {spec.name!r} has unsupported dtype {spec.dtype!r}")
    return dtype


def _check_specs(specs: Sequence[pb.ArraySpec], max_bytes: int) -> list[np.dtype[np.generic]]:
    dtypes, total, names = [], 0, set()
    for spec in specs:
        if not spec.name or spec.name in names:
            raise CodecError(f"array name {spec.name!r} is empty or repeated")
        names.add(spec.name)
        dtype = _dtype(spec)
        if len(spec.shape) > MAX_DIMS:
            raise CodecError(
                f"array {spec.name!r} has {len(spec.shape)} dimensions (max {MAX_DIMS})"
            )
        count = math.prod(int(d) for d in spec.shape)
        if count * dtype.itemsize != spec.num_bytes:
            raise CodecError(
                f"array {spec.name!r} declares {spec.num_bytes} bytes but shape "
                f"{list(spec.shape)} of {dtype} needs {count * dtype.itemsize}"
            )
        total += spec.num_bytes
        if total > max_bytes:
            raise CodecError(f"arrays declare more than the limit of {max_bytes} bytes")
        dtypes.append(dtype)
    return dtypes


class ArraysAssembler:
    """Rebuild `Arrays` from specs and in-order chunks, writing into preallocated arrays.

    With `check_finite`, float arrays are checked for NaN and Inf chunk by chunk as the
    bytes arrive, while they are still in cache (see `is_finite`). With a `pool`, the
    arrays come from it (see `ArrayPool`).
    """

    def __init__(
        self,
        specs: Sequence[pb.ArraySpec],
        max_bytes: int = DEFAULT_MAX_ARRAYS_BYTES,
        *,
        check_finite: bool = False,
        pool: ArrayPool | None = None,
    ):
        dtypes = _check_specs(specs, max_bytes)
        self._names = [s.name for s in specs]
        layout = [(tuple(int(d) for d in s.shape), dt) for s, dt in zip(specs, dtypes, strict=True)]
        try:
            if pool is None:
                self._arrays = [np.empty(shape, dtype=dtype) for shape, dtype in layout]
            else:
                self._arrays = pool.arrays(layout)
        except (ValueError, MemoryError) as exc:
            raise CodecError(f"cannot allocate the declared arrays: {exc}") from None
        self._flat = [a.reshape(-1) for a in self._arrays]
        self._bytes = [f.view(np.uint8) for f in self._flat]
        self._index = 0  # array being filled
        self._filled = 0  # bytes of it filled
        self._offset = 0  # global offset expected next
        self._checked = 0  # elements of it checked for NaN and Inf
        self._check_finite = check_finite
        # Whether the float arrays hold no NaN or Inf (with check_finite, once complete).
        self.is_finite = True
        self._skip_empty()

    def _skip_empty(self) -> None:
        while self._index < len(self._bytes) and self._filled == len(self._bytes[self._index]):
            self._index += 1
            self._filled = self._checked = 0

    @property
    def is_complete(self) -> bool:
        """Return whether every byte has arrived."""
        return self._index == len(self._bytes)

    def feed(self, chunk: Chunk) -> None:
        """Copy one chunk into place; raise CodecError if it is out of order or too long."""
        if self.is_complete:
            raise CodecError("chunk received after the arrays were complete")
        if chunk.offset != self._offset:
            raise CodecError(f"chunk at offset {chunk.offset}, expected {self._offset}")
        target, size = self._bytes[self._index], len(chunk.data)
        end = self._filled + size
        if end > len(target) or not size:
            raise CodecError(f"chunk of {size} bytes does not fit array {self._index}")
        # numpy copies without holding the GIL, so gRPC's threads keep the stream moving.
        target[self._filled : end] = np.frombuffer(chunk.data, dtype=np.uint8)
        self._filled = end
        self._offset += size
        if self._check_finite and self.is_finite:
            self._check(end // self._flat[self._index].itemsize)
        self._skip_empty()

    def _check(self, done: int) -> None:
        """Check the elements of the current array received since the last check."""
        flat = self._flat[self._index]
        if flat.dtype.kind == "f" and done > self._checked:
            self.is_finite = bool(np.isfinite(flat[self._checked : done]).all())
        self._checked = done

    def arrays(self) -> Arrays:
        """Return the assembled arrays (only once complete)."""
        if not self.is_complete:
            raise CodecError("arrays are incomplete")
        return Arrays(zip(self._names, self._arrays, strict=True))


class AnySpecs(tuple[pb.ArraySpec, ...]):
    """The expected specs of a protocol step (see `core.messages.PROTOCOL_KEY`): any."""


ANY_SPECS = AnySpecs()
"""Expect from a task's result arrays of any names, dtypes and shapes."""


def same_specs(a: Sequence[pb.ArraySpec], b: Sequence[pb.ArraySpec]) -> bool:
    """Return whether two spec lists describe the same names, dtypes and shapes."""
    key = [(s.name, _dtype(s).str, tuple(s.shape)) for s in a]
    return key == [(s.name, _dtype(s).str, tuple(s.shape)) for s in b]


# ---- config and metrics -------------------------------------------------------------


def _encode_config(config: Config) -> dict[str, pb.ConfigValue]:
    out = {}
    for key, raw in config.items():
        value = raw.item() if isinstance(raw, np.generic) else raw  # numpy scalars
        if isinstance(value, bool):
            out[key] = pb.ConfigValue(bool_value=value)
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise CodecError(f"config {key!r} = {value} does not fit in 64 bits")
            out[key] = pb.ConfigValue(int_value=value)
        elif isinstance(value, float):
            out[key] = pb.ConfigValue(float_value=value)
        elif isinstance(value, str):
            out[key] = pb.ConfigValue(string_value=value)
        else:
            raise CodecError(
                f"config {key!r} has type {type(value).__name__}; use bool/int/float/str"
            )
    return out


def _decode_config(config: Mapping[str, pb.ConfigValue]) -> dict[str, bool | int | float | str]:
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        kind = value.WhichOneof("kind")
        if kind is None:
            raise CodecError(f"config {key!r} has no value")
        out[key] = getattr(value, kind)
    return out


# ---- server -> client ---------------------------------------------------------------


def encode_welcome(client_id: int, run_id: str) -> pb.ServerMessage:
    """Return the server's answer to a client's Hello."""
    welcome = pb.Welcome(protocol_version=PROTOCOL_VERSION, client_id=client_id, run_id=run_id)
    return pb.ServerMessage(welcome=welcome)


def encode_shutdown(reason: str) -> pb.ServerMessage:
    """Return the message that ends a client's session."""
    return pb.ServerMessage(shutdown=pb.Shutdown(reason=reason))


def encode_task(
    task_id: int, task: Task, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.ServerMessage | bytes]:
    """Return the task header followed by its arrays as chunks (serialized already).

    The header is built at once, so a config or array the protocol cannot carry fails
    here, in the caller, rather than later inside the stream; chunks are made lazily.
    """
    phase = pb.TaskHeader.TRAIN if isinstance(task, TrainTask) else pb.TaskHeader.EVALUATE
    header = pb.TaskHeader(
        task_id=task_id,
        phase=phase,
        round_num=task.round_num,
        seed=task.seed,
        config=_encode_config(task.config),
        arrays=array_specs(task.arrays),
    )
    first: list[pb.ServerMessage | bytes] = [pb.ServerMessage(task=header)]
    return itertools.chain(first, _chunks(task_id, task.arrays, chunk_bytes))


@dataclass(slots=True)
class _Pending:
    header: pb.TaskHeader
    assembler: ArraysAssembler


class TaskDecoder:
    """Client side: turn a stream of server messages into complete tasks.

    Each task's arrays are received into those of the previous task where the client
    no longer uses them (see `ArrayPool`).
    """

    def __init__(self, client_id: int, max_bytes: int = DEFAULT_MAX_ARRAYS_BYTES) -> None:
        self.client_id = client_id
        self.max_bytes = max_bytes
        self._pending: _Pending | None = None
        self._pool = ArrayPool()

    def feed(self, message: pb.ServerMessage | Chunk) -> tuple[int, Task] | None:
        """Consume a task header or chunk; return (task_id, task) when one is complete."""
        chunk = _as_chunk(message)
        if chunk is not None:
            if self._pending is None or chunk.task_id != self._pending.header.task_id:
                raise CodecError("chunk for a task that was not announced")
            self._pending.assembler.feed(chunk)
        else:
            assert isinstance(message, pb.ServerMessage)  # _as_chunk took every Chunk
            kind = message.WhichOneof("body")
            if kind != "task":
                raise CodecError(f"unexpected {kind} message while receiving tasks")
            if self._pending is not None:
                raise CodecError("a new task arrived before the previous one was complete")
            header = message.task
            assembler = ArraysAssembler(header.arrays, self.max_bytes, pool=self._pool)
            self._pending = _Pending(header, assembler)
        pending = self._pending
        if not pending.assembler.is_complete:
            return None
        self._pending = None
        return pending.header.task_id, self._task(pending)

    def _task(self, pending: _Pending) -> Task:
        header = pending.header
        fields = {
            "round_num": int(header.round_num),
            "client_id": self.client_id,
            "arrays": pending.assembler.arrays(),
            "config": _decode_config(header.config),
            "seed": int(header.seed),
        }
        if header.phase == pb.TaskHeader.TRAIN:
            return TrainTask(**fields)  # type: ignore[arg-type]  # fields typed per key above
        if header.phase == pb.TaskHeader.EVALUATE:
            return EvalTask(**fields)  # type: ignore[arg-type]  # fields typed per key above
        raise CodecError(f"task {header.task_id} has no phase")


# ---- client -> server ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """A client's opening message."""

    protocol_version: int
    client_id: int
    name: str


def encode_hello(client_id: int | None, name: str) -> pb.ClientMessage:
    """Return a client's opening message (client_id None lets the server choose)."""
    hello = pb.Hello(
        protocol_version=PROTOCOL_VERSION,
        client_id=-1 if client_id is None else client_id,
        name=name,
    )
    return pb.ClientMessage(hello=hello)


def decode_hello(message: pb.ClientMessage | Chunk) -> Hello:
    """Return the Hello a stream must start with, or raise CodecError."""
    if isinstance(message, Chunk) or message.WhichOneof("body") != "hello":
        raise CodecError("the first message of a stream must be a Hello")
    h = message.hello
    return Hello(protocol_version=int(h.protocol_version), client_id=int(h.client_id), name=h.name)


def encode_result(
    task_id: int, outcome: TaskResult, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[pb.ClientMessage | bytes]:
    """Yield a result header, then (for training) the arrays as chunks (serialized)."""
    if isinstance(outcome, Failure):
        yield pb.ClientMessage(result=pb.ResultHeader(task_id=task_id, failure=outcome.message))
    elif isinstance(outcome, EvalResult):
        evaluate = pb.EvalOutcome(
            loss=outcome.loss, num_examples=outcome.num_examples, metrics=dict(outcome.metrics)
        )
        yield pb.ClientMessage(result=pb.ResultHeader(task_id=task_id, evaluate=evaluate))
    else:
        train = pb.TrainOutcome(
            num_examples=outcome.num_examples,
            metrics=dict(outcome.metrics),
            arrays=array_specs(outcome.arrays),
        )
        yield pb.ClientMessage(result=pb.ResultHeader(task_id=task_id, train=train))
        yield from _chunks(task_id, outcome.arrays, chunk_bytes)


SpecLookup = Callable[[int], "Sequence[pb.ArraySpec] | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedResult:
    """A complete result from a client.

    Attributes:
        task_id: The task it answers.
        outcome: The result, or the client's Failure.
        is_finite: Whether the arrays of a TrainResult hold no NaN or Inf (checked as
            they arrived; True for other outcomes).
    """

    task_id: int
    outcome: TaskResult
    is_finite: bool = True


class ResultDecoder:
    """Server side: turn one client's stream of messages into results.

    `expected` maps a task id to the array specs the task was sent with, or None when
    the client was not given that task; a training result must come back with the
    same specs (any, for `ANY_SPECS`).
    """

    def __init__(
        self,
        client_id: int,
        expected: SpecLookup,
        max_bytes: int,
        pool: ArrayPool | None = None,
    ) -> None:
        self.client_id = client_id
        self._expected = expected
        self._max_bytes = max_bytes
        self._pool = pool
        self._pending: tuple[int, pb.TrainOutcome, ArraysAssembler] | None = None

    def feed(self, message: pb.ClientMessage | Chunk) -> DecodedResult | None:
        """Consume a result header or chunk; return the result once it is complete."""
        chunk = _as_chunk(message)
        if chunk is not None:
            return self._feed_chunk(chunk)
        assert isinstance(message, pb.ClientMessage)  # _as_chunk took every Chunk
        kind = message.WhichOneof("body")
        if kind != "result":
            raise CodecError(f"unexpected {kind} message after the Hello")
        if self._pending is not None:
            raise CodecError("a new result arrived before the previous one was complete")
        header = message.result
        specs = self._expected(header.task_id)
        if specs is None:
            raise CodecError(f"result for task {header.task_id}, which this client was not given")
        outcome = header.WhichOneof("outcome")
        if outcome == "failure":
            return DecodedResult(task_id=header.task_id, outcome=self._failure(header.failure))
        if outcome == "evaluate":
            ev = header.evaluate
            metrics = {k: float(v) for k, v in ev.metrics.items()}
            result = EvalResult(loss=ev.loss, num_examples=int(ev.num_examples), metrics=metrics)
            return DecodedResult(task_id=header.task_id, outcome=result)
        if outcome != "train":
            raise CodecError(f"result for task {header.task_id} has no outcome")
        if not isinstance(specs, AnySpecs) and not same_specs(header.train.arrays, specs):
            raise CodecError(
                f"result for task {header.task_id} has arrays of other shapes or dtypes"
            )
        assembler = ArraysAssembler(
            header.train.arrays, self._max_bytes, check_finite=True, pool=self._pool
        )
        self._pending = (header.task_id, header.train, assembler)
        return self._finish() if assembler.is_complete else None

    def _feed_chunk(self, chunk: Chunk) -> DecodedResult | None:
        if self._pending is None or chunk.task_id != self._pending[0]:
            raise CodecError("chunk for a result that was not announced")
        self._pending[2].feed(chunk)
        return self._finish() if self._pending[2].is_complete else None

    def _finish(self) -> DecodedResult:
        assert self._pending is not None
        task_id, train, assembler = self._pending
        self._pending = None
        metrics = {k: float(v) for k, v in train.metrics.items()}
        result = TrainResult(
            arrays=assembler.arrays(), num_examples=int(train.num_examples), metrics=metrics
        )
        return DecodedResult(task_id=task_id, outcome=result, is_finite=assembler.is_finite)

    def _failure(self, message: str) -> Failure:
        # round_num and phase are filled in by the transport, which knows the task.
        return Failure(client_id=self.client_id, round_num=0, phase="train", message=message)


# ---- small accessors, so no other module touches protobuf objects -------------------


def message_kind(message: pb.ServerMessage | pb.ClientMessage | Chunk) -> str:
    """Return which body a message carries ("task", "chunk", "welcome", "hello", ...)."""
    if isinstance(message, Chunk):
        return "chunk"
    kind: str | None = message.WhichOneof("body")
    if kind is None:
        raise CodecError("message has no body")
    return kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """The server's answer to a Hello."""

    protocol_version: int
    client_id: int
    run_id: str


def decode_welcome(message: pb.ServerMessage | Chunk) -> Welcome:
    """Return the Welcome a server stream starts with, or raise CodecError."""
    if isinstance(message, Chunk) or message_kind(message) != "welcome":
        raise CodecError("the server's first message must be a Welcome")
    w = message.welcome
    return Welcome(
        protocol_version=int(w.protocol_version), client_id=int(w.client_id), run_id=w.run_id
    )


def decode_shutdown(message: pb.ServerMessage | Chunk) -> str:
    """Return the reason a server gave for ending the session."""
    if isinstance(message, Chunk) or message_kind(message) != "shutdown":
        raise CodecError("expected the server's Shutdown message")
    return str(message.shutdown.reason)
