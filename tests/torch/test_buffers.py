"""The vectorized trainer's recycled buffers (`federa.torch._buffers`)."""

from __future__ import annotations

import gc
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from federa.torch import TrainConfig, _buffers, module_to_arrays, train_cohort, vectorized
from tests.torch.test_vectorized import (
    CONFIGS,
    SEEDS,
    SIZES,
    assert_same_results,
    cohort_data,
    conv_dropout_model,
    one_at_a_time,
)
from tests.torch.test_vectorized_dense import mnist_2nn
from tests.torch.test_windowed import PLAIN, check_against_loop

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


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every array the trainer allocates comes from the pool and arrives full of NaN."""
    monkeypatch.setattr(_buffers, "MIN_BYTES", 0)
    take = _buffers._POOL.take

    def take_poisoned(nbytes: int) -> np.ndarray:
        buffer = take(nbytes)
        buffer.fill(0xFF)  # all-ones bytes: NaN as float32 and float64
        return buffer

    monkeypatch.setattr(_buffers._POOL, "take", take_poisoned)


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_cohort_training_writes_every_recycled_buffer_before_reading_it(cfg: TrainConfig) -> None:
    model = conv_dropout_model()
    start = [module_to_arrays(model)] * len(SIZES)
    data = cohort_data()
    want = one_at_a_time(start, data, cfg)
    for _ in range(2):  # the second time on buffers the first one gave back
        assert_same_results(train_cohort(model, start, data, cfg, SEEDS), want)
    assert _buffers.free_bytes() > 0


@pytest.mark.usefixtures("poisoned")
@pytest.mark.parametrize("shared", [True, False], ids=["shared_start", "own_starts"])
@pytest.mark.parametrize("build", [mnist_2nn, conv_dropout_model], ids=["2nn", "conv"])
def test_windows_write_every_recycled_buffer_before_reading_it(
    build: Callable[[], nn.Module], shared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectorized, "LARGE", 1)  # every dense weight gets a window
    for _ in range(2):
        check_against_loop(build, PLAIN["sgd_weight_decay"], shared)


def test_results_of_a_cohort_keep_their_buffers_until_dropped() -> None:
    # 8 clients x 64 x 784 float32 weights: 1.6 MB stacked, so pooled.
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    start = [module_to_arrays(model)] * 8
    data = [(torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,))) for _ in range(8)]
    cfg = TrainConfig(epochs=1, batch_size=5, lr=0.1)
    first = train_cohort(model, start, data, cfg, list(range(8)))
    kept = [arrays["1.weight"].copy() for arrays, _ in first]
    second = train_cohort(model, start, data, cfg, list(range(8)))
    for (arrays, _), copy in zip(first, kept, strict=True):  # not overwritten by the second
        np.testing.assert_array_equal(arrays["1.weight"], copy)
        assert not np.shares_memory(arrays["1.weight"], second[0][0]["1.weight"])
    where = min(arrays["1.weight"].ctypes.data for arrays, _ in first)
    del first, arrays
    gc.collect()
    third = train_cohort(model, start, data, cfg, list(range(8)))
    # The first call's stack, reused:
    assert min(arrays["1.weight"].ctypes.data for arrays, _ in third) == where
    for (a, _), (b, _) in zip(second, third, strict=True):
        np.testing.assert_array_equal(a["1.weight"], b["1.weight"])
    del second, third, a, b
    gc.collect()
    assert _buffers.free_bytes() > 0
    vectorized.release_buffers()
    assert _buffers.free_bytes() == 0
