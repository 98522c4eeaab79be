"""Aligned CPU buffers for the vectorized trainer, reused once nothing views them.

Every chunk of a cohort allocates its stacked parameters afresh (tens of MB: 32
copies of a 2NN's first layer are 20 MB), and the next chunk asks for the same sizes
again. Memory that size comes from the kernel unless glibc's adaptive mmap threshold
happens to have grown past it, and then every page is faulted in and zeroed on first
touch: in the 1,000-client 2NN benchmark that was 3,000-5,000 page faults and 20-50 ms
of system time in a 0.2 s round, in some runs and not others. Here a buffer goes back
to a free list when the last array viewing it (a client's result, say) is collected,
and the next request of the same size takes it instead of new memory.

The free list holds at most `MAX_FREE_BYTES`, the oldest buffers leaving first;
`release()` empties it. Buffers in use are not counted: they are the trainer's and
its results' own memory.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

NDArray = npt.NDArray[Any]

ALIGN = 64  # bytes: a cache line, the alignment torch's own CPU allocator gives
MIN_BYTES = 1 << 20  # smaller requests come from numpy (malloc serves them from its heap)
MAX_FREE_BYTES = 1 << 28  # 256 MiB


class _Pool:
    def __init__(self) -> None:
        self._free: list[tuple[int, NDArray]] = []  # (bytes, buffer), oldest first
        self._free_bytes = 0
        # Re-entrant: a collection inside `give_back` or `take` can free an array and
        # call `give_back` again on the same thread.
        self._lock = threading.RLock()

    def take(self, nbytes: int) -> NDArray:
        """Return a free uint8 buffer of exactly `nbytes` bytes, or a new one."""
        with self._lock:
            for i in range(len(self._free) - 1, -1, -1):
                if self._free[i][0] == nbytes:
                    self._free_bytes -= nbytes
                    return self._free.pop(i)[1]
        return aligned(nbytes)

    def give_back(self, nbytes: int, buffer: NDArray) -> None:
        with self._lock:
            self._free.append((nbytes, buffer))
            self._free_bytes += nbytes
            while self._free_bytes > MAX_FREE_BYTES:
                self._free_bytes -= self._free.pop(0)[0]

    def release(self) -> None:
        with self._lock:
            self._free.clear()
            self._free_bytes = 0

    @property
    def free_bytes(self) -> int:
        return self._free_bytes


_POOL = _Pool()


def aligned(nbytes: int) -> NDArray:
    """Return a new uninitialised uint8 array of `nbytes` starting on an `ALIGN` boundary.

    numpy only aligns to 16 bytes, and MKL's in-place batched products run about 3x
    slower on such memory.
    """
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    offset = -raw.ctypes.data % ALIGN
    return raw[offset : offset + nbytes]


def empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray:
    """Return an uninitialised, writable, `ALIGN`-aligned array, from the free list if it can.

    The buffer returns to the free list when the array and every view of it (numpy
    views, tensors made with `torch.from_numpy`) are gone.
    """
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return aligned(nbytes).view(dtype).reshape(shape)
    buffer = _POOL.take(nbytes)
    handle = _Handle(buffer, shape, dtype)
    out: NDArray = np.asarray(handle)
    weakref.finalize(handle, _POOL.give_back, nbytes, buffer).atexit = False
    return out


class _Handle:
    """The base of an array on a pooled buffer: every view keeps it alive, so when it is
    collected nothing reads or writes the buffer any more.

    (A memoryview cannot serve: numpy makes its own from it and lets the given one go.)
    """

    __slots__ = ("__array_interface__", "__weakref__", "buffer")

    def __init__(self, buffer: NDArray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.buffer = buffer
        self.__array_interface__ = {
            "shape": tuple(shape),
            "typestr": dtype.str,
            "data": (buffer.ctypes.data, False),
            "version": 3,
        }


def tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Return an uninitialised tensor: from `empty` on the CPU, torch's own elsewhere.

    (torch's CUDA allocator already caches its blocks; bfloat16 has no numpy twin.)
    """
    numpy_dtype = _NUMPY_DTYPES.get(dtype)
    if device.type != "cpu" or numpy_dtype is None:
        return torch.empty(shape, dtype=dtype, device=device)
    return torch.from_numpy(empty(shape, numpy_dtype))


_NUMPY_DTYPES = {
    t: np.dtype(n)
    for t, n in [
        (torch.float16, np.float16),
        (torch.float32, np.float32),
        (torch.float64, np.float64),
        (torch.int64, np.int64),
        (torch.int32, np.int32),
        (torch.uint8, np.uint8),
        (torch.bool, np.bool_),
    ]
}


def release() -> None:
    """Drop the free buffers (those in use stay with their arrays)."""
    _POOL.release()


def free_bytes() -> int:
    """Return the bytes held on the free list."""
    return _POOL.free_bytes
