"""Limit torch's CPU threads for a block of code and restore the caller's setting after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: leave torch's setting).

    Small networks run fastest on one thread when other jobs share the cores (OpenMP threads
    wait on each other); the previous count is restored even if the block raises. Do not hold
    it across a ``yield`` to the caller: set it per case instead, so the caller's code keeps its
    own setting.
    """
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
