"""ArrayPool: receive buffers are reused only when nothing else uses them."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import federa as fd
from federa.core.messages import TrainTask
from federa.transport.grpc import codec
from federa.transport.grpc.pool import ArrayPool

F4, I8 = np.dtype("<f4"), np.dtype("<i8")
LAYOUT = [((2, 3), F4), ((4,), I8)]


def test_arrays_have_the_layout_asked_for() -> None:
    arrays = ArrayPool().arrays(LAYOUT)
    assert [(a.shape, a.dtype) for a in arrays] == LAYOUT
    assert all(a.flags.writeable and a.flags.c_contiguous for a in arrays)


def test_arrays_nothing_references_are_reused() -> None:
    pool = ArrayPool()
    alive = [weakref.ref(a) for a in pool.arrays(LAYOUT)]
    again = pool.arrays(LAYOUT)
    assert [r() is a for r, a in zip(alive, again, strict=True)] == [True, True]


HOLDERS: list[Any] = [
    pytest.param(lambda a: a, id="the-array"),
    pytest.param(lambda a: [a], id="a-list"),
    pytest.param(lambda a: a[1:], id="a-view"),
    pytest.param(lambda a: a.reshape(-1)[::2], id="a-view-of-a-view"),
    pytest.param(lambda a: memoryview(a), id="a-memoryview"),
    pytest.param(lambda a: np.frombuffer(a, dtype=np.uint8), id="a-frombuffer"),
]


@pytest.mark.parametrize("hold", HOLDERS)
def test_an_array_still_referenced_is_never_handed_out_again(hold: Callable[[Any], Any]) -> None:
    pool = ArrayPool()
    first, second = pool.arrays(LAYOUT)
    unused = weakref.ref(second)
    del second
    first[...] = 7.0
    held = hold(first)
    before = np.asarray(held).tobytes()
    first_id = id(first)  # stays unique: `held` keeps the array alive
    del first
    again = pool.arrays(LAYOUT)
    assert id(again[0]) != first_id, "an array in use was handed out again"
    again[0][...] = -1.0
    assert np.asarray(held).tobytes() == before
    assert again[1] is unused()  # the array nobody else held was reused


def test_an_array_of_another_shape_or_dtype_is_not_reused() -> None:
    pool = ArrayPool()
    first = [id(a) for a in pool.arrays(LAYOUT)]
    other = pool.arrays([((3, 2), F4), ((4,), F4)])
    assert [(a.shape, a.dtype) for a in other] == [((3, 2), F4), ((4,), F4)]
    assert not {id(a) for a in other} & set(first)


def test_a_large_layout_survives_small_messages_in_between() -> None:
    # SecAgg+ rounds: small key and share messages between the large masked inputs.
    pool = ArrayPool(max_layouts=2)
    large = [weakref.ref(a) for a in pool.arrays(LAYOUT)]
    pool.arrays([((1,), I8)])
    again = pool.arrays(LAYOUT)
    assert [r() is a for r, a in zip(large, again, strict=True)] == [True, True]
    del again
    pool.arrays([((1,), I8)])
    pool.arrays([((2,), I8)])  # a third layout evicts the least recently used one
    assert [r() for r in large] == [None, None], "an evicted layout's arrays were kept"


def test_clear_lets_the_arrays_go() -> None:
    pool = ArrayPool()
    alive = [weakref.ref(a) for a in pool.arrays(LAYOUT)]
    pool.clear()
    assert [r() for r in alive] == [None, None]


def task_messages(task_id: int, arrays: fd.Arrays) -> list[Any]:
    task = TrainTask(round_num=1, client_id=0, arrays=arrays)
    return [
        codec.parse_server_message(codec.serialize(m))
        for m in codec.encode_task(task_id, task, chunk_bytes=5)
    ]


def receive(decoder: codec.TaskDecoder, task_id: int, arrays: fd.Arrays) -> fd.Arrays:
    done = None
    for message in task_messages(task_id, arrays):
        done = decoder.feed(message)
    assert done is not None
    return done[1].arrays


def test_a_client_receives_each_task_into_the_arrays_of_the_last_it_let_go() -> None:
    decoder = codec.TaskDecoder(0)
    one = fd.Arrays({"w": np.arange(6, dtype=np.float32), "b": np.arange(3)})
    two = fd.Arrays({k: v * 2 for k, v in one.items()})
    three = fd.Arrays({k: v * 3 for k, v in one.items()})
    got = receive(decoder, 1, one)
    alive = {k: weakref.ref(v) for k, v in got.items()}
    kept_w = got["w"]  # the client still uses "w" of task 1
    del got
    got = receive(decoder, 2, two)
    assert got.equals(two)
    assert got["b"] is alive["b"](), "the unused array was not reused"
    assert got["w"] is not kept_w
    assert np.array_equal(kept_w, one["w"]), "an array the client uses was overwritten"
    del got
    assert receive(decoder, 3, three).equals(three)
