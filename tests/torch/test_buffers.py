"""The vectorized trainer's recycled buffers (`federa.torch._buffers`)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from federa.torch import _buffers

F32 = np.dtype(np.float32)
BIG = (_buffers.MIN_BYTES // 4 + 1,)  # just over the pooling threshold, in float32s


@pytest.fixture(autouse=True)
def empty_pool() -> None:
    _buffers.release()


def address(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def test_large_buffers_are_aligned_writable_and_reused_once_unviewed() -> None:
    a = _buffers.empty(BIG, F32)
    assert a.flags.writeable and address(a) % _buffers.ALIGN == 0
    a[...] = 1.0
    where = address(a)
    del a
    gc.collect()
    assert _buffers.free_bytes() == BIG[0] * 4
    b = _buffers.empty(BIG, F32)
    assert address(b) == where and _buffers.free_bytes() == 0


def test_a_buffer_stays_out_of_the_pool_while_any_view_of_it_lives() -> None:
    a = _buffers.empty((2, *BIG), F32)
    row = torch.from_numpy(a)[1]  # a tensor viewing the second half, like a client's result
    result = row.numpy()
    result[...] = 7.0
    where = address(a)
    del a, row
    gc.collect()
    assert _buffers.free_bytes() == 0
    other = _buffers.empty((2, *BIG), F32)  # cannot be the buffer the result still reads
    other[...] = 0.0
    assert address(other) != where and np.all(result == 7.0)
    del result
    gc.collect()
    assert _buffers.free_bytes() == 2 * BIG[0] * 4


def test_only_a_request_of_the_same_size_takes_a_free_buffer() -> None:
    a = _buffers.empty(BIG, F32)
    del a
    gc.collect()
    b = _buffers.empty((BIG[0] + 1,), F32)
    assert _buffers.free_bytes() == BIG[0] * 4
    del b


def test_small_requests_bypass_the_pool() -> None:
    a = _buffers.empty((10, 3), F32)
    assert a.shape == (10, 3) and address(a) % _buffers.ALIGN == 0
    del a
    gc.collect()
    assert _buffers.free_bytes() == 0


def test_the_free_list_keeps_at_most_max_free_bytes_dropping_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_buffers, "MAX_FREE_BYTES", 2 * BIG[0] * 4 + 3 * BIG[0] * 4)
    sizes = [(BIG[0],), (2 * BIG[0],), (3 * BIG[0],)]
    arrays = [_buffers.empty(s, F32) for s in sizes]
    where = [address(a) for a in arrays]
    for i in range(3):
        arrays[i] = None  # free them in order
    gc.collect()
    # Freed in order: 1, 2, 3 units; 6 > 5 units, so the oldest (1 unit) left.
    assert _buffers.free_bytes() == 5 * BIG[0] * 4
    assert address(_buffers.empty(sizes[2], F32)) == where[2]
    assert address(_buffers.empty(sizes[1], F32)) == where[1]
    _buffers.release()
    assert _buffers.free_bytes() == 0
