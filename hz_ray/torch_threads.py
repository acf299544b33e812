"""Run GP math with a chosen number of torch intra-op threads, then restore.

The GPs here are small (tens to a few thousand points): intra-op threading
gains little and, on a busy machine, OpenMP threads spinning against other
processes slow a marginal-likelihood fit down by an order of magnitude (a
100-point, 8-d fit measured 0.39 s with 1 thread and 5.2 s with 2 on this
2-core machine under load). Drivers therefore run the optimiser single-
threaded. Nothing changes at import; the previous setting is restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads(count)``.

    Args:
        count: Intra-op threads inside the block, >= 1.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
