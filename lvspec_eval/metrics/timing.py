"""Wall-clock timers that synchronise the device before reading the clock."""

from __future__ import annotations

import time
from typing import Optional

import torch


def synchronize(device: Optional[torch.device]) -> None:
    """Wait for queued kernels on `device` (no-op on CPU)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":  # pragma: no cover
        torch.mps.synchronize()


class Stopwatch:
    """start() ... stop() -> seconds, device-synchronised at both ends."""

    def __init__(self, device: Optional[torch.device] = None):
        self.device = device
        self._t0: Optional[float] = None

    def start(self) -> None:
        synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self._t0 is None:
            raise RuntimeError("Stopwatch.stop() before start()")
        synchronize(self.device)
        elapsed = time.perf_counter() - self._t0
        self._t0 = None
        return elapsed
