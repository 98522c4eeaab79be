"""Receive buffers kept from one message to the next: fresh memory fills slowly.

Writing into freshly allocated memory costs a page fault and a zeroed page for every
page touched; on virtual machines whose memory the host backs lazily this runs well
under 1 GB/s, slower than gRPC on loopback. A model keeps its shapes from round to
round, so a receiver keeps the arrays of the last message it assembled and assembles
the next one into those that nothing else uses any more.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

NDArray = npt.NDArray[Any]
Layout = Sequence[tuple[tuple[int, ...], np.dtype[Any]]]


def _refcount(items: list[NDArray], index: int) -> int:
    return sys.getrefcount(items[index])


# The count `_refcount` gives for an array that only its list references. Measured the
# same way rather than assumed, so interpreters that count borrowed references
# differently still compare like with like.
_UNUSED = _refcount([np.empty(0)], 0)


class ArrayPool:
    """The arrays of the last messages a receiver assembled, reused for the next ones.

    Arrays are kept per layout (the shapes and dtypes of one message), for the last
    `max_layouts` layouts used, so that a protocol whose stages alternate between small
    messages and the large one (SecAgg+: keys, shares, the masked input, unmasking)
    still finds the large one's buffers each round.

    An array is reused only when nothing but the pool references it: no variable, no
    container, no numpy view (a view references the array that owns its memory), no
    memoryview or other buffer on it, no tensor made with `torch.from_numpy`. CPython's
    reference count says so exactly; an array still in use is never handed out again,
    and a new one is allocated in its place. Arrays kept but not reused are let go.
    Thread-safe.

    Args:
        max_layouts: Distinct layouts kept (>= 1); the least recently used goes first.
    """

    def __init__(self, max_layouts: int = 4) -> None:
        self._kept: dict[tuple[tuple[tuple[int, ...], str], ...], list[NDArray]] = {}
        self._max_layouts = max(1, max_layouts)
        self._lock = threading.Lock()

    def arrays(self, layout: Layout) -> list[NDArray]:
        """Return arrays of these shapes and dtypes, in order; their contents are undefined.

        The array at each position is the one kept at that position for this layout
        when it is unused, else a new one; the returned arrays are kept for next time.
        """
        key = tuple((tuple(shape), np.dtype(dtype).str) for shape, dtype in layout)
        with self._lock:
            kept = self._kept.pop(key, [])
            out = []
            for i, (shape, dtype) in enumerate(layout):
                if i < len(kept) and _refcount(kept, i) == _UNUSED:
                    out.append(kept[i])
                else:
                    out.append(np.empty(shape, dtype=dtype))
            del kept
            self._kept[key] = list(out)  # most recently used last
            while len(self._kept) > self._max_layouts:
                del self._kept[next(iter(self._kept))]
            return out

    def clear(self) -> None:
        """Let go of the kept arrays (they are freed once nothing else uses them)."""
        with self._lock:
            self._kept = {}


def keep_freed_heap(block_bytes: int = 16 << 20) -> None:
    """Have glibc keep freed heap memory for the next chunks instead of trimming it.

    glibc raises its mmap threshold to the size of the largest mmapped block freed so
    far (up to 32 MiB) and trims the heap whenever more than twice that is free at its
    top. Left at the size of one 4 MiB chunk, the heap is often trimmed after gRPC frees
    a chunk's read buffers, and the next chunk faults its pages in anew: on virtual
    machines with slow page faults, half the receiving side's system time. Freeing one
    16 MiB block once moves the threshold to 16 MiB, as any program that freed a 16 MiB
    array would, so up to 32 MiB of freed heap stays mapped for the next chunks. With
    another allocator, or a threshold already higher, nothing changes.
    """
    block = np.empty(block_bytes, dtype=np.uint8)  # never touched: no page is faulted in
    del block
