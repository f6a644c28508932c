"""The gateway's garbage-collection pauses, as metrics. A collection stops the event loop, and
with it every socket write: a full one over 10,000 connections' objects is what made the
fan-out's tail (issue #14). Every collection is timed, by generation."""

from __future__ import annotations

import gc
import time
from typing import Any

from app.gateway.metrics import GC_PAUSE


class GcPauses:
    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            GC_PAUSE.labels(str(info["generation"])).observe((time.perf_counter() - self._started) * 1000)

    def install(self) -> None:
        gc.callbacks.append(self)

    def remove(self) -> None:
        gc.callbacks.remove(self)
