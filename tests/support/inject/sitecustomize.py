"""Fault injection for a worker subprocess (put this directory first on its PYTHONPATH):
with AUCTION_TEST_BREAK_FOLD_AFTER=n, the (n+1)th pass of the fold fails outside any record,
as a bug or an exhausted memory would. Production code has no hook for this."""

import os

_after = os.environ.get("AUCTION_TEST_BREAK_FOLD_AFTER")
if _after is not None:
    from streams.states import StateCache

    _limit = int(_after)
    _take = StateCache.take_unwritten
    _passes = [0]

    def _breaking(self: StateCache) -> object:
        _passes[0] += 1
        if _passes[0] > _limit:
            raise MemoryError("injected by tests/support/inject")
        return _take(self)

    StateCache.take_unwritten = _breaking  # type: ignore[method-assign, assignment]
