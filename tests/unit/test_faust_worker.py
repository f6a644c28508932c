"""The worker's Faust Worker, as `auction-timer worker` builds it."""

from __future__ import annotations

import logging

import faust
import pytest

from app.worker import faust_worker


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
def test_no_terminal_spinner_and_no_debug_records_at_any_level(level: int) -> None:
    """Faust's spinner (on at WARNING and above) would set the root logger to DEBUG when the
    worker sets up logging, so that every library's debug lines were formatted: one per
    changelog record in a recovery. (Played on a logger of its own, not the process's root.)"""
    worker = faust_worker(faust.App("spinner-test", broker="kafka://127.0.0.1:9"), logging.getLevelName(level))
    root = logging.getLogger(f"spinner-test-{level}")
    root.addHandler(logging.NullHandler())
    root.setLevel(level)
    worker.on_setup_root_logger(root, level)
    assert worker.spinner is None
    assert (root.level, len(root.handlers)) == (level, 1)
