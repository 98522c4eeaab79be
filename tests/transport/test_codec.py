"""The federa.v1 wire format: round trips through bytes, and every protocol error."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import federa as fd
from federa.core.messages import EvalResult, EvalTask, Failure, TrainResult, TrainTask
from federa.errors import TransportError
from federa.transport.grpc import codec
from federa.transport.grpc._proto import federa_pb2 as pb

CHUNK = 7  # bytes: small and odd, so chunks end mid-element and mid-array


def mixed_arrays() -> fd.Arrays:
    """Every supported kind of array, with sizes that are not multiples of CHUNK."""
    return fd.Arrays(
        {
            "f32": np.arange(12, dtype=np.float32).reshape(3, 4) / 3,
            "f64": np.array([np.pi, -0.0, 1e300, -1e-300]),
            "i64": np.array([-(2**63), 2**63 - 1, 0, -1], dtype=np.int64),
            "flag": np.array([[True, False, True]]),
            "u8": np.arange(0, 256, 17, dtype=np.uint8),
            "scalar": np.array(2.5, dtype=np.float32),  # 0-d
            "empty": np.zeros((0, 5), dtype=np.float32),
            "f16": np.array([1.5, -2.0, 65504.0], dtype=np.float16),
            "i8": np.array([-128, 127], dtype=np.int8),
        }
    )


def assert_same_arrays(got: fd.Arrays, want: fd.Arrays) -> None:
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].shape == array.shape, name
        assert got[name].dtype == array.dtype.newbyteorder("<"), name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def over_the_wire(messages: Iterable[Any], parse: Callable[[bytes], Any]) -> list[Any]:
    """Serialize every message to bytes and parse it back, as gRPC would."""
    return [parse(codec.serialize(m)) for m in messages]


def decode_task(messages: Sequence[Any], client_id: int = 3) -> tuple[int, Any]:
    """Feed a task's messages to a TaskDecoder; only the last may complete it."""
    decoder = codec.TaskDecoder(client_id)
    for message in messages[:-1]:
        assert decoder.feed(message) is None
    done = decoder.feed(messages[-1])
    assert done is not None
    return done


def task_messages(task: TrainTask | EvalTask, task_id: int = 41) -> list[Any]:
    return over_the_wire(codec.encode_task(task_id, task, CHUNK), codec.parse_server_message)


def result_messages(task_id: int, outcome: Any, chunk_bytes: int = CHUNK) -> list[Any]:
    return over_the_wire(
        codec.encode_result(task_id, outcome, chunk_bytes), codec.parse_client_message
    )


def result_decoder(
    given_tasks: dict[int, fd.Arrays], client_id: int = 5, max_bytes: int = 1 << 30
) -> codec.ResultDecoder:
    """A server-side decoder for a client that was given `given_tasks` (task id -> arrays)."""
    specs = {tid: codec.array_specs(arrays) for tid, arrays in given_tasks.items()}
    return codec.ResultDecoder(client_id, specs.get, max_bytes)


def decode_result(decoder: codec.ResultDecoder, messages: Sequence[Any]) -> tuple[int, Any]:
    for message in messages[:-1]:
        assert decoder.feed(message) is None
    done = decoder.feed(messages[-1])
    assert done is not None
    return done.task_id, done.outcome


def spec(name: str, dtype: str, shape: Sequence[int], num_bytes: int | None = None) -> Any:
    if num_bytes is None:
        num_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return pb.ArraySpec(name=name, dtype=dtype, shape=list(shape), num_bytes=num_bytes)


def chunk(offset: int, data: bytes, task_id: int = 1) -> codec.Chunk:
    return codec.Chunk(task_id=task_id, offset=offset, data=data)


# ---- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [TrainTask, EvalTask])
def test_task_round_trip(kind: type[TrainTask] | type[EvalTask]) -> None:
    arrays = mixed_arrays()
    task = kind(round_num=9, client_id=3, arrays=arrays, config={"lr": 0.5}, seed=2**63 + 5)
    messages = task_messages(task, task_id=41)
    assert codec.message_kind(messages[0]) == "task"
    assert all(codec.message_kind(m) == "chunk" for m in messages[1:])
    task_id, got = decode_task(messages, client_id=3)
    assert task_id == 41
    assert type(got) is kind
    assert (got.round_num, got.client_id, got.seed) == (9, 3, 2**63 + 5)
    assert dict(got.config) == {"lr": 0.5}
    assert_same_arrays(got.arrays, arrays)
    assert all(a.flags.writeable and a.flags.c_contiguous for a in got.arrays.values())


def test_the_client_id_of_a_task_is_the_decoders() -> None:
    task = TrainTask(round_num=1, client_id=3, arrays=fd.Arrays({"w": np.ones(2)}))
    _, got = decode_task(task_messages(task), client_id=8)
    assert got.client_id == 8


def test_chunks_are_small_and_never_span_two_arrays() -> None:
    arrays = mixed_arrays()
    task = TrainTask(round_num=1, client_id=0, arrays=arrays)
    chunks = task_messages(task, task_id=41)[1:]
    bounds, start = [], 0
    for array in arrays.values():
        bounds.append((start, start + array.nbytes))
        start += array.nbytes
    expected_offset = 0
    for c in chunks:
        assert c.task_id == 41
        assert 0 < len(c.data) <= CHUNK
        assert c.offset == expected_offset
        end = c.offset + len(c.data)
        assert any(lo <= c.offset and end <= hi for lo, hi in bounds), (c.offset, end)
        expected_offset = end
    assert expected_offset == arrays.num_bytes


def test_chunks_are_made_lazily() -> None:
    arrays = fd.Arrays({"w": np.zeros(1000, dtype=np.uint8)})
    chunks = codec.iter_chunks(arrays, chunk_bytes=10)
    offset, data = next(chunks)
    assert (offset, len(data)) == (0, 10)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i8", ">u2", ">i4"])
def test_big_endian_arrays_arrive_little_endian_with_equal_values(dtype: str) -> None:
    values = np.array([[1, -2, 3], [40000, 5, 6]], dtype="f8")
    if np.dtype(dtype).kind == "u":
        values = np.abs(values)
    arrays = fd.Arrays({"be": values.astype(dtype)})
    specs = codec.array_specs(arrays)
    assert specs[0].dtype == np.dtype(dtype).newbyteorder("<").str
    _, got = decode_task(task_messages(TrainTask(round_num=1, client_id=0, arrays=arrays)))
    assert got.arrays["be"].dtype.byteorder in "<="
    assert got.arrays["be"].dtype.str == specs[0].dtype
    np.testing.assert_array_equal(got.arrays["be"], arrays["be"])


def test_non_contiguous_arrays_are_sent_by_value() -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    arrays = fd.Arrays({"t": base.T, "strided": base[::2, ::3], "fortran": np.asfortranarray(base)})
    _, got = decode_task(task_messages(EvalTask(round_num=1, client_id=0, arrays=arrays)))
    assert_same_arrays(got.arrays, arrays)


def test_a_task_without_bytes_is_complete_at_its_header() -> None:
    for arrays in (fd.Arrays(), fd.Arrays({"a": np.zeros(0), "b": np.zeros((2, 0), np.int64)})):
        messages = task_messages(TrainTask(round_num=1, client_id=0, arrays=arrays))
        assert len(messages) == 1
        _, got = decode_task(messages)
        assert_same_arrays(got.arrays, arrays)


def test_config_values_keep_their_types() -> None:
    config = {
        "flag": True,
        "off": False,
        "epochs": 3,
        "negative": -(2**63),
        "largest": 2**63 - 1,
        "lr": 0.125,
        "whole_float": 2.0,
        "inf": float("-inf"),
        "name": "héllo ✓",
        "empty": "",
    }
    task = TrainTask(round_num=1, client_id=0, arrays=fd.Arrays(), config=config)
    _, got = decode_task(task_messages(task))
    assert dict(got.config) == config
    for key, value in config.items():
        assert type(got.config[key]) is type(value), key
    nan_task = TrainTask(round_num=1, client_id=0, arrays=fd.Arrays(), config={"x": float("nan")})
    _, got = decode_task(task_messages(nan_task))
    assert np.isnan(got.config["x"])


def test_numpy_scalars_in_a_config_travel_as_plain_values() -> None:
    config = {"lr": np.float32(0.5), "epochs": np.int64(3), "flag": np.bool_(True)}
    task = TrainTask(round_num=1, client_id=0, arrays=fd.Arrays(), config=config)  # type: ignore[arg-type]
    _, got = decode_task(task_messages(task))
    assert dict(got.config) == {"lr": 0.5, "epochs": 3, "flag": True}
    assert type(got.config["epochs"]) is int


@pytest.mark.parametrize("value", [[1, 2], None, b"raw"])
def test_a_config_value_of_another_type_is_a_codec_error(value: Any) -> None:
    task = TrainTask(round_num=1, client_id=0, arrays=fd.Arrays(), config={"bad": value})
    with pytest.raises(codec.CodecError, match="'bad'"):
        next(codec.encode_task(1, task))


def test_a_config_int_outside_int64_is_a_codec_error() -> None:
    task = TrainTask(round_num=1, client_id=0, arrays=fd.Arrays(), config={"big": 2**64})
    with pytest.raises(codec.CodecError, match="'big'"):
        next(codec.encode_task(1, task))


def test_train_result_round_trip() -> None:
    arrays = mixed_arrays()
    outcome = TrainResult(arrays=arrays, num_examples=2**40, metrics={"loss": 0.25, "acc": 1.0})
    messages = result_messages(17, outcome)
    assert codec.message_kind(messages[0]) == "result"
    task_id, got = decode_result(result_decoder({17: arrays}), messages)
    assert task_id == 17
    assert isinstance(got, TrainResult)
    assert got.num_examples == 2**40
    assert dict(got.metrics) == {"loss": 0.25, "acc": 1.0}
    assert_same_arrays(got.arrays, arrays)


def test_a_train_result_of_big_endian_arrays_matches_a_little_endian_task() -> None:
    task_arrays = fd.Arrays({"w": np.arange(5, dtype="<f4")})
    sent = fd.Arrays({"w": np.arange(5, dtype=">f4") * 2})
    _, got = decode_result(
        result_decoder({3: task_arrays}),
        result_messages(3, TrainResult(arrays=sent, num_examples=1)),
    )
    assert_same_arrays(got.arrays, sent)


def test_a_train_result_without_bytes_is_complete_at_its_header() -> None:
    arrays = fd.Arrays({"a": np.zeros(0, np.float32)})
    messages = result_messages(2, TrainResult(arrays=arrays, num_examples=4))
    assert len(messages) == 1
    _, got = decode_result(result_decoder({2: arrays}), messages)
    assert got.num_examples == 4


def test_eval_result_round_trip() -> None:
    outcome = EvalResult(loss=0.75, num_examples=12, metrics={"accuracy": 0.5})
    messages = result_messages(4, outcome)
    assert len(messages) == 1
    task_id, got = decode_result(result_decoder({4: fd.Arrays({"w": np.ones(3)})}), messages)
    assert (task_id, got) == (4, outcome)


def test_failure_round_trip() -> None:
    outcome = Failure(client_id=5, round_num=3, phase="evaluate", message="RuntimeError: boom ✗")
    messages = result_messages(4, outcome)
    assert len(messages) == 1
    task_id, got = decode_result(result_decoder({4: fd.Arrays()}, client_id=5), messages)
    assert task_id == 4
    assert isinstance(got, Failure)
    assert (got.client_id, got.message) == (5, "RuntimeError: boom ✗")


def test_results_follow_each_other_on_one_stream() -> None:
    a, b = fd.Arrays({"w": np.arange(10.0)}), fd.Arrays({"v": np.arange(3, dtype=np.int64)})
    decoder = result_decoder({1: a, 2: b, 3: a})
    assert decode_result(decoder, result_messages(1, TrainResult(arrays=a, num_examples=1)))[0] == 1
    assert decode_result(decoder, result_messages(2, TrainResult(arrays=b, num_examples=1)))[0] == 2
    assert decode_result(decoder, result_messages(3, EvalResult(loss=1, num_examples=1)))[0] == 3


def test_hello_and_welcome_round_trip() -> None:
    for client_id, wire_id in ((None, -1), (0, 0), (2**40, 2**40)):
        message = codec.parse_client_message(
            codec.serialize(codec.encode_hello(client_id, "edge-7"))
        )
        hello = codec.decode_hello(message)
        assert (hello.protocol_version, hello.client_id, hello.name) == (
            codec.PROTOCOL_VERSION,
            wire_id,
            "edge-7",
        )
    welcome = codec.decode_welcome(
        codec.parse_server_message(codec.serialize(codec.encode_welcome(12, "run-x")))
    )
    assert (welcome.protocol_version, welcome.client_id, welcome.run_id) == (
        codec.PROTOCOL_VERSION,
        12,
        "run-x",
    )
    shutdown = codec.parse_server_message(codec.serialize(codec.encode_shutdown("done ✓")))
    assert codec.message_kind(shutdown) == "shutdown"
    assert codec.decode_shutdown(shutdown) == "done ✓"


def test_codec_errors_are_transport_errors() -> None:
    assert issubclass(codec.CodecError, TransportError)


# ---- array specs ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["foo", "", "float33", "("])
def test_an_unknown_dtype_is_refused(dtype: str) -> None:
    with pytest.raises(codec.CodecError, match="unknown dtype"):
        codec.ArraysAssembler([pb.ArraySpec(name="w", dtype=dtype, shape=[2], num_bytes=8)])


@pytest.mark.parametrize(
    "dtype", ["object", "|O", ">f4", ">i8", "<U3", "|S4", "|V8", "<c8", "<M8[s]", "<m8[s]"]
)
def test_an_unsupported_dtype_is_refused(dtype: str) -> None:
    itemsize = np.dtype(dtype).itemsize
    with pytest.raises(codec.CodecError, match="unsupported dtype"):
        codec.ArraysAssembler([spec("w", dtype, [2], 2 * itemsize)])


def test_array_specs_refuses_arrays_that_cannot_be_sent() -> None:
    with pytest.raises(codec.CodecError, match="'z'"):
        codec.array_specs(fd.Arrays({"z": np.ones(2, dtype=np.complex64)}))
    with pytest.raises(codec.CodecError, match="'s'"):
        codec.array_specs(fd.Arrays({"s": np.array(["a", "b"])}))


@pytest.mark.parametrize(
    ("shape", "num_bytes"), [([3, 4], 47), ([3, 4], 49), ([], 0), ([0], 4), ([2**62, 4], 0)]
)
def test_a_size_that_does_not_match_the_shape_is_refused(shape: list[int], num_bytes: int) -> None:
    with pytest.raises(codec.CodecError, match="declares"):
        codec.ArraysAssembler([spec("w", "<f4", shape, num_bytes)])


@pytest.mark.parametrize("names", [["", "b"], ["a", "a"]])
def test_empty_or_repeated_names_are_refused(names: list[str]) -> None:
    with pytest.raises(codec.CodecError, match="empty or repeated"):
        codec.ArraysAssembler([spec(n, "<f4", [1]) for n in names])


def test_a_declared_size_over_the_limit_is_refused_before_allocating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allocations: list[Any] = []
    real_empty = np.empty

    def spy(*args: Any, **kwargs: Any) -> Any:
        allocations.append(args)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(np, "empty", spy)
    huge = spec("w", "|u1", [10**15], 10**15)
    with pytest.raises(codec.CodecError, match="limit of 1024 bytes"):
        codec.ArraysAssembler([huge], max_bytes=1024)
    # The limit is on the total, not per array.
    parts = [spec("a", "<f8", [64]), spec("b", "<f8", [64]), spec("c", "<f8", [1])]
    with pytest.raises(codec.CodecError, match="limit of 1024 bytes"):
        codec.ArraysAssembler(parts, max_bytes=1024)
    assert allocations == []
    # At the limit exactly is fine.
    assert not codec.ArraysAssembler(parts[:2], max_bytes=1024).is_complete
    assert len(allocations) == 2


@pytest.mark.parametrize(
    "shape",
    [pytest.param([1] * 65, id="65-dims"), pytest.param([0, 2**63], id="zero-size-huge-dim")],
)
def test_a_shape_numpy_cannot_allocate_is_a_codec_error(shape: list[int]) -> None:
    with pytest.raises(codec.CodecError):
        codec.ArraysAssembler([spec("w", "|u1", shape, int(np.prod(shape, dtype=object)))])


# ---- chunks ---------------------------------------------------------------------------


def two_array_assembler() -> codec.ArraysAssembler:
    return codec.ArraysAssembler([spec("a", "|u1", [4]), spec("b", "|u1", [3])])


def test_chunks_fill_arrays_in_order() -> None:
    assembler = two_array_assembler()
    for c in (
        chunk(0, b"\x01\x02"),
        chunk(2, b"\x03\x04"),
        chunk(4, b"\x05"),
        chunk(5, b"\x06\x07"),
    ):
        assert not assembler.is_complete
        assembler.feed(c)
    assert assembler.is_complete
    arrays = assembler.arrays()
    assert arrays["a"].tolist() == [1, 2, 3, 4]
    assert arrays["b"].tolist() == [5, 6, 7]


@pytest.mark.parametrize(
    ("chunks", "match"),
    [
        pytest.param([chunk(2, b"\x00")], "offset 2, expected 0", id="skips-ahead"),
        pytest.param([chunk(0, b"\x00\x00"), chunk(3, b"\x00")], "expected 2", id="gap"),
        pytest.param([chunk(0, b"\x00\x00"), chunk(1, b"\x00")], "expected 2", id="overlaps"),
        pytest.param([chunk(0, b"\x00\x00"), chunk(0, b"\x00\x00")], "expected 2", id="repeats"),
        pytest.param([chunk(0, b"\x00" * 5)], "does not fit", id="spans-two-arrays"),
        pytest.param([chunk(0, b"\x00" * 4), chunk(4, b"\x00" * 4)], "does not fit", id="too-long"),
        pytest.param([chunk(0, b"")], "does not fit", id="empty"),
        pytest.param(
            [chunk(0, b"\x00" * 4), chunk(4, b"\x00" * 3), chunk(7, b"\x00")],
            "after the arrays were complete",
            id="after-complete",
        ),
    ],
)
def test_a_chunk_out_of_place_is_refused(chunks: list[Any], match: str) -> None:
    assembler = two_array_assembler()
    for c in chunks[:-1]:
        assembler.feed(c)
    with pytest.raises(codec.CodecError, match=match):
        assembler.feed(chunks[-1])


def test_incomplete_arrays_are_not_returned() -> None:
    assembler = two_array_assembler()
    assembler.feed(chunk(0, b"\x00"))
    with pytest.raises(codec.CodecError, match="incomplete"):
        assembler.arrays()


# ---- TaskDecoder (client side) ----------------------------------------------------------


def small_task_messages(task_id: int = 41) -> list[Any]:
    arrays = fd.Arrays({"w": np.arange(6, dtype=np.float32)})
    return task_messages(TrainTask(round_num=1, client_id=0, arrays=arrays), task_id)


def test_a_chunk_for_a_task_that_was_not_announced_is_refused() -> None:
    messages = small_task_messages(task_id=41)
    with pytest.raises(codec.CodecError, match="not announced"):
        codec.TaskDecoder(0).feed(messages[1])
    decoder = codec.TaskDecoder(0)
    decoder.feed(messages[0])
    other = chunk(0, messages[1].data, task_id=42)
    with pytest.raises(codec.CodecError, match="not announced"):
        decoder.feed(other)


def test_a_task_before_the_previous_one_is_complete_is_refused() -> None:
    decoder = codec.TaskDecoder(0)
    messages = small_task_messages()
    decoder.feed(messages[0])
    with pytest.raises(codec.CodecError, match="before the previous one was complete"):
        decoder.feed(small_task_messages(task_id=42)[0])


@pytest.mark.parametrize(
    "message",
    [
        codec.encode_welcome(1, "run"),
        codec.encode_shutdown("bye"),
        pb.ServerMessage(),
    ],
    ids=["welcome", "shutdown", "empty"],
)
def test_other_server_messages_are_refused_while_receiving_tasks(message: Any) -> None:
    with pytest.raises(codec.CodecError, match="unexpected"):
        codec.TaskDecoder(0).feed(message)


def test_a_task_without_a_phase_is_refused() -> None:
    header = pb.TaskHeader(task_id=1, round_num=1)
    with pytest.raises(codec.CodecError, match="no phase"):
        codec.TaskDecoder(0).feed(pb.ServerMessage(task=header))


def test_a_config_entry_without_a_value_is_refused() -> None:
    header = pb.TaskHeader(task_id=1, phase=pb.TaskHeader.TRAIN, config={"lr": pb.ConfigValue()})
    with pytest.raises(codec.CodecError, match="'lr' has no value"):
        codec.TaskDecoder(0).feed(pb.ServerMessage(task=header))


def test_a_task_over_the_clients_limit_is_refused() -> None:
    header = pb.TaskHeader(task_id=1, phase=pb.TaskHeader.TRAIN, arrays=[spec("w", "|u1", [2048])])
    with pytest.raises(codec.CodecError, match="limit"):
        codec.TaskDecoder(0, max_bytes=1024).feed(pb.ServerMessage(task=header))


def test_decoding_the_welcome() -> None:
    with pytest.raises(codec.CodecError, match="Welcome"):
        codec.decode_welcome(small_task_messages()[0])
    with pytest.raises(codec.CodecError, match="no body"):
        codec.message_kind(pb.ServerMessage())


# ---- ResultDecoder (server side) --------------------------------------------------------

GIVEN = fd.Arrays({"w": np.arange(6, dtype=np.float32), "b": np.zeros(2, dtype=np.int64)})


def train_result(arrays: fd.Arrays = GIVEN) -> TrainResult:
    return TrainResult(arrays=arrays, num_examples=3)


def test_a_result_for_a_task_the_client_was_not_given_is_refused() -> None:
    decoder = result_decoder({7: GIVEN})
    for outcome in (train_result(), EvalResult(loss=1.0, num_examples=1)):
        with pytest.raises(codec.CodecError, match="task 8, which this client was not given"):
            decoder.feed(result_messages(8, outcome)[0])
    failure = Failure(client_id=5, round_num=1, phase="train", message="x")
    with pytest.raises(codec.CodecError, match="not given"):
        decoder.feed(result_messages(8, failure)[0])


@pytest.mark.parametrize(
    "arrays",
    [
        pytest.param(fd.Arrays({"w": np.arange(7, dtype=np.float32), "b": GIVEN["b"]}), id="shape"),
        pytest.param(fd.Arrays({"w": GIVEN["w"].reshape(2, 3), "b": GIVEN["b"]}), id="ndim"),
        pytest.param(fd.Arrays({"w": GIVEN["w"].astype(np.float64), "b": GIVEN["b"]}), id="dtype"),
        pytest.param(fd.Arrays({"b": GIVEN["b"], "w": GIVEN["w"]}), id="order"),
        pytest.param(fd.Arrays({"w": GIVEN["w"], "c": GIVEN["b"]}), id="name"),
        pytest.param(fd.Arrays({"w": GIVEN["w"]}), id="missing"),
        pytest.param(fd.Arrays({**GIVEN, "extra": np.ones(1)}), id="extra"),
    ],
)
def test_a_train_result_with_other_arrays_than_the_task_is_refused(arrays: fd.Arrays) -> None:
    decoder = result_decoder({7: GIVEN})
    with pytest.raises(codec.CodecError, match="other shapes or dtypes"):
        decoder.feed(result_messages(7, train_result(arrays))[0])


def test_a_train_result_declaring_other_sizes_than_its_shapes_is_refused() -> None:
    header = result_messages(7, train_result())[0]
    header.result.train.arrays[0].num_bytes = 10**15
    with pytest.raises(codec.CodecError, match="declares"):
        result_decoder({7: GIVEN}).feed(header)


def test_a_train_result_with_an_unknown_dtype_is_a_codec_error() -> None:
    header = result_messages(7, train_result())[0]
    header.result.train.arrays[0].dtype = "no-such-dtype"
    with pytest.raises(codec.CodecError):
        result_decoder({7: GIVEN}).feed(header)


def test_a_train_result_over_the_servers_limit_is_refused() -> None:
    big = fd.Arrays({"w": np.zeros(512, dtype=np.float32)})
    decoder = result_decoder({7: big}, max_bytes=1024)
    with pytest.raises(codec.CodecError, match="limit of 1024 bytes"):
        decoder.feed(result_messages(7, train_result(big))[0])


def test_result_chunks_out_of_place_are_refused() -> None:
    messages = result_messages(7, train_result())
    with pytest.raises(codec.CodecError, match="not announced"):
        result_decoder({7: GIVEN}).feed(messages[1])
    decoder = result_decoder({7: GIVEN})
    decoder.feed(messages[0])
    with pytest.raises(codec.CodecError, match="not announced"):
        decoder.feed(chunk(0, messages[1].data, task_id=8))
    decoder = result_decoder({7: GIVEN})
    decoder.feed(messages[0])
    with pytest.raises(codec.CodecError, match="offset"):
        decoder.feed(messages[2])
    decoder = result_decoder({7: GIVEN})
    decoder.feed(messages[0])
    with pytest.raises(codec.CodecError, match="before the previous one was complete"):
        decoder.feed(result_messages(7, EvalResult(loss=0.0, num_examples=1))[0])


def test_a_result_without_an_outcome_is_refused() -> None:
    message = pb.ClientMessage(result=pb.ResultHeader(task_id=7))
    with pytest.raises(codec.CodecError, match="no outcome"):
        result_decoder({7: GIVEN}).feed(message)


@pytest.mark.parametrize(
    "message", [codec.encode_hello(1, "again"), pb.ClientMessage()], ids=["hello", "empty"]
)
def test_other_client_messages_after_the_hello_are_refused(message: Any) -> None:
    with pytest.raises(codec.CodecError, match="unexpected"):
        result_decoder({7: GIVEN}).feed(message)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(result_messages(1, EvalResult(loss=0, num_examples=1))[0], id="result"),
        pytest.param(chunk(0, b"x"), id="chunk"),
        pytest.param(pb.ClientMessage(chunk=pb.Chunk(data=b"x")), id="protobuf-chunk"),
        pytest.param(pb.ClientMessage(), id="empty"),
    ],
)
def test_a_first_message_that_is_not_a_hello_is_refused(message: Any) -> None:
    with pytest.raises(codec.CodecError, match="must be a Hello"):
        codec.decode_hello(message)


# ---- malformed bytes --------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"\xff\xff\xff\xff", id="bad-tag"),
    pytest.param(b"garbage!", id="garbage"),
    pytest.param(b"\x0a\x05\x08", id="truncated"),
    pytest.param(b"\x1a\x20" + b"\x00" * 4, id="length-past-end"),
    pytest.param(b"\x0a\x03\x1a\x01\xff", id="bad-utf8"),
    pytest.param(b"\x1a\x0c\x08" + b"\xff" * 10 + b"\x01", id="chunk-varint-too-long"),
    pytest.param(b"\x1a\x05\x08\x01\x1a\x09ab", id="chunk-data-past-end"),
]


@pytest.mark.parametrize("data", MALFORMED)
@pytest.mark.parametrize("parse", [codec.parse_client_message, codec.parse_server_message])
def test_malformed_bytes_are_a_codec_error(parse: Callable[[bytes], Any], data: bytes) -> None:
    with pytest.raises(codec.CodecError, match="malformed"):
        parse(data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_codec_error(data: bytes) -> None:
    """Whatever a peer sends, the receiving side raises nothing but CodecError."""
    with contextlib.suppress(codec.CodecError):
        message = codec.parse_client_message(data)
        with contextlib.suppress(codec.CodecError):
            codec.decode_hello(message)
        result_decoder({1: GIVEN, 0: fd.Arrays()}).feed(message)
    with contextlib.suppress(codec.CodecError):
        codec.TaskDecoder(0, max_bytes=1 << 20).feed(codec.parse_server_message(data))


# ---- chunks written and read without protobuf objects ------------------------------------

UINT64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(task_id=UINT64, offset=UINT64, data=st.binary(max_size=300))
def test_chunks_are_written_and_read_exactly_as_protobuf_does(
    task_id: int, offset: int, data: bytes
) -> None:
    ours = codec.serialize(codec.Chunk(task_id=task_id, offset=offset, data=memoryview(data)))
    body = pb.Chunk(task_id=task_id, offset=offset, data=data)
    assert ours == pb.ServerMessage(chunk=body).SerializeToString()
    assert ours == pb.ClientMessage(chunk=body).SerializeToString()
    for parse in (codec.parse_server_message, codec.parse_client_message):
        got = parse(ours)
        assert isinstance(got, codec.Chunk)
        assert (got.task_id, got.offset, bytes(got.data)) == (task_id, offset, data)


def test_a_chunk_laid_out_otherwise_is_read_by_protobuf_and_decoded_alike() -> None:
    """Valid protobuf that the fast reader does not take: fields in reverse order."""
    inner = b"\x1a\x02hi" + b"\x08\x07"  # data, then task_id 7; offset 0 left out
    message = codec.parse_server_message(b"\x1a" + bytes([len(inner)]) + inner)
    assert not isinstance(message, codec.Chunk)
    assert codec.message_kind(message) == "chunk"
    decoder = codec.TaskDecoder(0)
    header = pb.TaskHeader(task_id=7, phase=pb.TaskHeader.TRAIN, arrays=[spec("w", "|u1", [2])])
    assert decoder.feed(pb.ServerMessage(task=header)) is None
    done = decoder.feed(message)
    assert done is not None
    assert done[1].arrays["w"].tobytes() == b"hi"


def test_chunks_on_their_way_hold_no_reference_to_the_arrays() -> None:
    """The stream holds on to the last message it sent; that must not pin the model."""
    array = np.arange(100, dtype=np.float32)
    alive = weakref.ref(array)
    outcome = TrainResult(arrays=fd.Arrays({"w": array}), num_examples=1)
    messages = list(codec.encode_result(1, outcome, chunk_bytes=64))
    del array, outcome
    assert len(messages) == 1 + 400 // 64 + 1
    assert alive() is None


def decoded_result(arrays: fd.Arrays) -> codec.DecodedResult:
    decoder = result_decoder({7: arrays})
    messages = result_messages(7, TrainResult(arrays=arrays, num_examples=1))
    for message in messages[:-1]:
        assert decoder.feed(message) is None
    done = decoder.feed(messages[-1])
    assert done is not None
    return done


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(("name", "index"), [("f32", 0), ("f32", 2), ("f64", 3), ("f16", 1)])
def test_nan_or_inf_in_a_train_result_is_found_as_its_chunks_arrive(
    name: str, index: int, bad: float
) -> None:
    values = {k: v.copy() for k, v in mixed_arrays().items()}
    values[name].reshape(-1)[index] = bad
    done = decoded_result(fd.Arrays(values))
    assert not done.is_finite
    assert_same_arrays(done.outcome.arrays, fd.Arrays(values))  # type: ignore[union-attr]  # a TrainResult


def test_a_finite_train_result_is_finite() -> None:
    assert decoded_result(mixed_arrays()).is_finite
