"""The worker's Faust Worker, as `auction-timer worker` builds it."""

from __future__ import annotations

import logging

import faust
import pytest

from app.worker import faust_worker


@pytest.mark.parametrize("level", ["INFO", "WARNING", "ERROR"])
def test_no_terminal_spinner_and_no_debug_records_at_any_level(level: str) -> None:
    """Faust's spinner (on at WARNING and above) would set the root logger to DEBUG, so that
    every library's debug lines were formatted: one per changelog record in a recovery."""
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    try:
        worker = faust_worker(faust.App("spinner-test", broker="kafka://127.0.0.1:9"), level)
        worker._setup_logging()
        assert worker.spinner is None
        assert not logging.getLogger("faust.tables.recovery").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
